"""`python -m distill.run` end to end with a tiny model folder: results table, checkpoint, store record,
metrics log and plots; the checkpoint plays in `agents.play`; a killed run resumes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.models import load_model
from distill.config import add_arguments, from_arguments
from distill.run import main
from experience_store import ExperienceStore


def distill(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (no interpreter start-up); returns (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def tiny_run_args(model: str, out: Path, store: Path, steps: int = 2) -> list[str]:
    return [
        "--env", "qa", "--env-context", "handbook", "--model", model, "--store", str(store),
        "--out-dir", str(out), "--steps", str(steps), "--episodes-per-step", "2", "--max-new-tokens", "4",
        "--eval-tasks", "2", "--eval-max-new-tokens", "3", "--eval-every", "1", "--save-every", "1",
        "--ood-env", "math", "--kl-top-k", "16",
    ]


def test_end_to_end(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, store = tmp_path / "run", tmp_path / "exp.db"
    code, stdout, stderr = distill(capsys, *tiny_run_args(tiny_model_dir, out, store), "--merge-lora")
    assert code == 0, stderr
    assert "before" in stdout and "after" in stdout and "OOD env (math)" in stdout

    checkpoint = out / "checkpoints" / "step-000002"
    assert (out / "latest").read_text() == "step-000002"
    assert (checkpoint / "adapter_config.json").is_file()
    assert json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_model_dir
    adapted, _ = load_model(str(checkpoint))  # what `agents.play --model <checkpoint>` does
    merged, _ = load_model(str(checkpoint / "merged"))  # --merge-lora: a plain Hugging Face folder
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)
    assert (out / "training.png").stat().st_size > 0 and (out / "evaluation.png").stat().st_size > 0

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert [r["step"] for r in records if "eval_detail" in r] == [0, 1, 2]
    with ExperienceStore.open(store, readonly=True) as s:
        (run,) = s.runs()
    assert run.status == "completed" and run.checkpoint_path == str(checkpoint)
    assert set(run.evaluation) == {"before", "after"}
    assert set(run.evaluation["after"]) == {"student", "student_with_context", "ood"}
    assert [step for step, _ in run.metrics["train/loss"]] == [1, 2]

    play = subprocess.run(
        [sys.executable, "-m", "agents.play", "--env", "qa", "--model", str(checkpoint), "--episodes", "1",
         "--store", str(tmp_path / "play.db"), "--max-new-tokens", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert play.returncode == 0, play.stderr


def test_resume_continues_a_killed_run(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, store = tmp_path / "run", tmp_path / "exp.db"
    assert distill(capsys, *tiny_run_args(tiny_model_dir, out, store, steps=1))[0] == 0
    code, _, stderr = distill(capsys, *tiny_run_args(tiny_model_dir, out, store, steps=2))
    assert code == 2 and "--resume" in stderr  # never overwrites a run silently
    code, _, stderr = distill(capsys, *tiny_run_args(tiny_model_dir, out, store, steps=2), "--resume")
    assert code == 0, stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert (out / "latest").read_text() == "step-000002"
    with ExperienceStore.open(store, readonly=True) as s:
        (run,) = s.runs()  # the resumed run continues its record
    assert run.status == "completed" and [step for step, _ in run.metrics["train/loss"]] == [1, 2]
    code, _, stderr = distill(capsys, *tiny_run_args(tiny_model_dir, out, store, steps=2), "--resume")
    assert code == 0, stderr  # resuming a finished run redoes nothing
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == records


def test_runs_share_the_start_models_evaluation(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "eval-cache.json"

    def run(name: str, *extra: str) -> list[dict]:
        args = tiny_run_args(tiny_model_dir, tmp_path / name, tmp_path / "exp.db", steps=1)
        code, _, stderr = distill(capsys, *args, "--eval-every", "0", "--eval-cache", str(cache), *extra)
        assert code == 0, stderr
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines() if "eval_detail" in line]

    first = run("first")
    assert [r["from_cache"] for r in first] == [False, False]  # before (measured, then stored) and after
    (entry,) = json.loads(cache.read_text()).values()
    assert entry == first[0]["eval_detail"]
    other_seed = run("other-seed", "--seed", "1", "--method", "offpolicy")
    assert other_seed[0]["from_cache"] and other_seed[0]["eval_detail"] == entry and not other_seed[1]["from_cache"]
    fewer_tasks = run("fewer-tasks", "--eval-tasks", "1")
    assert not fewer_tasks[0]["from_cache"] and len(json.loads(cache.read_text())) == 2


def test_missing_context_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = distill(capsys, "--env", "math", "--store", str(tmp_path / "exp.db"), "--out-dir", str(tmp_path / "run"))
    assert code != 0
    assert "no selected knowledge set" in stderr and "Traceback" not in stderr


def test_env_args_are_parsed_and_a_bad_one_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = from_arguments(parser.parse_args(["--env", "sokoban", "--env-args", "max_turns=3", "rules=full"]))
    assert config.env_args == ("max_turns=3", "rules=full") and config.to_dict()["env_args"] == ("max_turns=3", "rules=full")
    code, _, stderr = distill(
        capsys, "--env", "qa", "--env-context", "handbook", "--env-args", "turns=3", "--out-dir", str(tmp_path / "run")
    )
    assert code == 2 and "env 'qa' rejected arguments {'turns': 3}" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


def test_context_kind_places_a_context_file(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traces = tmp_path / "traces.txt"
    traces.write_text("Task: What is 2 + 2?\nReply: 2 + 2 = 4.\nAnswer: 4\nOutcome: success", encoding="utf-8")
    args = tiny_run_args(tiny_model_dir, tmp_path / "run", tmp_path / "exp.db", steps=1)
    args[args.index("--env-context") : args.index("--env-context") + 2] = ["--context", str(traces), "--context-kind", "traces"]
    code, _, stderr = distill(capsys, *args)
    assert code == 0, stderr
    with ExperienceStore.open(tmp_path / "exp.db", readonly=True) as s:
        (run,) = s.runs()
    assert (run.config["context_kind"], run.config["context_id"]) == ("traces", str(traces))
