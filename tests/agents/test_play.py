"""`python -m agents.play` end to end, in subprocesses, with a tiny model folder and a real store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import commands.play
from commands.play import main
from cli import run_main, write_context
from agents.records import Episode
from experience_store import ExperienceStore


def play(*args: str, stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents.play", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def stored(store: Path, **filters) -> list:
    with ExperienceStore.open(store, readonly=True) as s:
        return list(s.episodes(**filters))


def test_plays_and_stores_every_episode(tiny_model_dir: str, tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    result = play("--env", "math", "--model", tiny_model_dir, "--episodes", "3", "--store", str(store), "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    episodes = stored(store)
    assert len(episodes) == 3 and {e.env_id for e in episodes} == {"math"}
    assert "success rate" in result.stdout


def test_env_args_reach_every_env_of_the_run(tiny_model_dir: str, tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    result = play("--env", "sokoban", "--env-args", "max_turns=2", "--model", tiny_model_dir, "--episodes", "2",
                  "--store", str(store), "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert [e.num_turns for e in stored(store)] == [2, 2]  # the tiny model never wins, so every turn is played
    result = play("--env", "sokoban", "--env-args", "max_steps=2", "--store", str(tmp_path / "other.db"))
    assert result.returncode == 2 and "rejected arguments {'max_steps': 2}" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_keeps_every_finished_episode(tiny_model_dir: str, tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    args = ["--env", "sokoban", "--split", "train", "--model", tiny_model_dir, "--episodes", "1000", "--batch-size", "2",
            "--store", str(store), "--max-new-tokens", "4"]
    # Ctrl-C's default action, even where this suite runs in the background (a shell's `&` makes SIGINT ignored).
    def restore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen([sys.executable, "-m", "agents.play", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=restore_sigint)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (not store.exists() or len(stored(store)) < 3):
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr  # like every CLI of the project
    assert "Traceback" not in stderr
    kept = stored(store)
    assert 3 <= len(kept) < 1000
    assert f"interrupted: this run stored {len(kept)} episodes" in " ".join(stdout.split())  # the true count
    assert all(e.turns for e in kept)


def test_unknown_env_is_a_clear_error(tmp_path: Path) -> None:
    result = play("--env", "chess", "--store", str(tmp_path / "exp.db"))
    assert result.returncode == 2
    assert "unknown env 'chess'" in result.stderr and "textworld" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "exp.db").exists()  # nothing written on a bad request


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    result = play("--env", "math", "--model", "no-such-model", "--store", str(tmp_path / "exp.db"))
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "exp.db").exists()  # checked before the store is created


def play_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(main, capsys, *args)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--episodes", "0"], "error: argument --episodes: must be >= 1, got 0"),
        (["--episodes", "-3"], "error: argument --episodes: must be >= 1, got -3"),
        (["--batch-size", "0"], "error: argument --batch-size: must be >= 1, got 0"),
        (["--temperature", "nan"], "error: argument --temperature: must be a finite number, got nan"),
        (["--temperature", "-1"], "error: argument --temperature: must be >= 0.0, got -1.0"),
        (["--top-p", "inf"], "error: argument --top-p: must be a finite number, got inf"),
        (["--top-p", "0"], "top_p must be > 0, got 0.0"),
        (["--max-new-tokens", "0"], "error: argument --max-new-tokens: must be >= 1, got 0"),
        (["--round", "-1"], "error: argument --round: must be >= 0, got -1"),
    ],
)
def test_a_number_out_of_range_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code, _, stderr = play_here(capsys, "--env", "math", "--store", str(tmp_path / "exp.db"), *flags)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "exp.db").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        (" \n\t\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "is not UTF-8 text"),
        (b"rules\x00\x00", "is not text: it holds NUL bytes"),
        (None, "is a directory"),
    ],
)
def test_a_bad_context_file_is_named_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes | None, message: str
) -> None:
    context = tmp_path / "context.txt"
    write_context(context, content)
    code, _, stderr = play_here(capsys, "--env", "math", "--context", str(context), "--store", str(tmp_path / "exp.db"))
    assert code == 2 and f"context file {context} {message}" in stderr
    assert not (tmp_path / "exp.db").exists()


def test_a_broken_model_folder_is_named_before_the_store_is_created(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text("{broken")
    code, _, stderr = play_here(capsys, "--env", "math", "--model", str(broken), "--store", str(tmp_path / "exp.db"))
    assert code == 2 and f"model folder {broken}: config.json is not readable JSON" in stderr
    assert not (tmp_path / "exp.db").exists()


def test_the_store_is_opened_before_the_model_loads(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def load_llm(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded before the store was opened")

    monkeypatch.setattr(commands.play, "load_llm", load_llm)
    (tmp_path / "file").write_text("")
    store = tmp_path / "file" / "exp.db"  # a store that cannot be created, even by root
    code, _, stderr = play_here(capsys, "--env", "math", "--model", tiny_model_dir, "--store", str(store))
    assert code == 2 and "exp.db" in stderr and "Traceback" not in stderr


def test_ctrl_c_while_the_model_loads_exits_130_without_a_traceback(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def load_llm(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.play, "load_llm", load_llm)
    code, stdout, stderr = play_here(capsys, "--env", "math", "--model", tiny_model_dir, "--store", str(tmp_path / "exp.db"))
    assert code == 130 and "this run stored 0 episodes" in stdout and "Traceback" not in stdout + stderr


def test_eval_reports_with_and_without_context_and_records_it(tiny_model_dir: str, tmp_path: Path) -> None:
    store, context = tmp_path / "exp.db", tmp_path / "knowledge.txt"
    context.write_text("- EXPERIENCE ITEM: read the question twice.")
    result = play("--env", "qa", "--model", tiny_model_dir, "--eval", "--split", "test", "--episodes", "2",
                  "--context", str(context), "--store", str(store), "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert "with context" in result.stdout and "none" in result.stdout and "McNemar" in result.stdout
    with ExperienceStore.open(store, readonly=True) as s:
        (run,) = s.runs()
        assert set(run.evaluation) == {"none", "with context"} and run.evaluation["none"]["n"] == 2
        assert run.evaluation["none"]["outcomes"].keys() == run.evaluation["with context"]["outcomes"].keys()
        assert len(list(s.episodes(split="test"))) == 4


def test_eval_plays_each_task_once_and_collection_repeats_them(tiny_model_dir: str, tmp_path: Path) -> None:
    """FrozenLake's test split holds 4 maps: --eval --episodes 6 plays those 4; plain play plays 6."""
    store = tmp_path / "exp.db"
    common = ("--env", "frozenlake", "--model", tiny_model_dir, "--split", "test", "--episodes", "6",
              "--store", str(store), "--max-new-tokens", "2")  # fmt: skip
    result = play(*common, "--eval")
    assert result.returncode == 0, result.stderr
    with ExperienceStore.open(store, readonly=True) as s:
        assert len({e.task_id for e in s.episodes(split="test")}) == len(list(s.episodes(split="test"))) == 4
    assert play(*common).returncode == 0
    with ExperienceStore.open(store, readonly=True) as s:
        assert len(list(s.episodes(split="test"))) == 4 + 6


def test_human_play_from_the_keyboard(tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    result = play("--env", "math", "--human", "--episodes", "1", "--split", "test", "--store", str(store), stdin="42\n")
    assert result.returncode == 0, result.stderr
    (episode,) = stored(store)
    assert episode.model == "human" and episode.turns[0].reply == "42"


def test_other_env_args_than_the_stores_are_refused_before_the_model_loads(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "exp.db"
    with ExperienceStore.open(store) as s:
        s.add_episodes([Episode(env_id="sokoban", task_id="t", split="train", model="m")])  # the env's defaults
    args = ["--env", "sokoban", "--env-args", "max_turns=2", "--model", tiny_model_dir, "--episodes", "1",
            "--store", str(store), "--max-new-tokens", "4"]  # fmt: skip
    code, _, stderr = run_main(main, capsys, *args)
    assert code == 2 and 'env_args {"max_turns": 2}' in stderr and "env_args {}" in stderr
    assert "loading" not in capsys.readouterr().out and len(stored(store)) == 1
    code, _, stderr = run_main(main, capsys, *args, "--allow-mixed-env-args")
    assert code == 0, stderr
    assert [e.env_args for e in stored(store)] == [{}, {"max_turns": 2}]


def test_vllm_memory_fraction_goes_with_the_vllm_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run_main(main, capsys, "--vllm-memory-fraction", "0.5", "--store", str(tmp_path / "exp.db"))
    assert code == 2 and "--vllm-memory-fraction goes with --backend vllm" in stderr
    code, _, stderr = run_main(main, capsys, "--backend", "vllm", "--vllm-memory-fraction", "1.5", "--store", str(tmp_path / "exp.db"))
    assert code == 2 and "argument --vllm-memory-fraction: must be <= 1.0, got 1.5" in stderr and not (tmp_path / "exp.db").exists()
