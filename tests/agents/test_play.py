"""`python -m agents.play` end to end, in subprocesses, with a tiny model folder and a real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    assert process.returncode == 0, stderr
    assert "interrupted" in stdout
    kept = stored(store)
    assert 3 <= len(kept) < 1000
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


def test_eval_reports_with_and_without_context_and_records_it(tiny_model_dir: str, tmp_path: Path) -> None:
    store, context = tmp_path / "exp.db", tmp_path / "knowledge.txt"
    context.write_text("- EXPERIENCE ITEM: read the question twice.")
    result = play("--env", "qa", "--model", tiny_model_dir, "--eval", "--split", "test", "--episodes", "2",
                  "--context", str(context), "--store", str(store), "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert "with context" in result.stdout and "none" in result.stdout
    with ExperienceStore.open(store, readonly=True) as s:
        (run,) = s.runs()
        assert set(run.evaluation) == {"none", "with context"} and run.evaluation["none"]["n"] == 2
        assert len(list(s.episodes(split="test"))) == 4


def test_human_play_from_the_keyboard(tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    result = play("--env", "math", "--human", "--episodes", "1", "--split", "test", "--store", str(store), stdin="42\n")
    assert result.returncode == 0, result.stderr
    (episode,) = stored(store)
    assert episode.model == "human" and episode.turns[0].reply == "42"
