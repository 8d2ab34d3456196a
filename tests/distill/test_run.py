"""`python -m distill.run` end to end with a tiny model folder: results table, checkpoint, store record,
metrics log and plots; the checkpoint plays in `agents.play`; a killed run resumes."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.models import load_model
from common.config import add_arguments, from_arguments
from distill.config import DistillConfig
from distill.run import main
from cli import run_main, write_context
from experience_store import ExperienceStore


def distill(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(main, capsys, *args)


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
    # The test split before and after only; validation (the monitoring split) at every evaluation.
    evaluations = [(r["step"], r["split"]) for r in records if "eval_detail" in r]
    assert evaluations == [(0, "test"), (0, "validation"), (1, "validation"), (2, "test"), (2, "validation")]
    assert "McNemar" in stdout and "p=1" in stdout and "+0/-0 of 2" in stdout  # paired changes (nothing learnt)
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
    cache = tmp_path / "eval-cache.jsonl"

    def entries() -> list[dict]:
        return [json.loads(line) for line in cache.read_text().splitlines()]

    def run(name: str, *extra: str) -> list[dict]:
        args = tiny_run_args(tiny_model_dir, tmp_path / name, tmp_path / "exp.db", steps=1)
        code, _, stderr = distill(capsys, *args, "--eval-every", "0", "--eval-cache", str(cache), *extra)
        assert code == 0, stderr
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines() if "eval_detail" in line]

    first = run("first")
    assert [r["from_cache"] for r in first] == [False, False]  # before (measured, then stored) and after
    columns = ("student", "student_with_context", "ood")
    stored = {column: {k: v for k, v in e.items() if k not in ("key", "seconds")} for column, e in zip(columns, entries())}
    assert stored == first[0]["eval_detail"]  # one entry per column
    other_seed = run("other-seed", "--seed", "1", "--method", "offpolicy")
    assert other_seed[0]["from_cache"] and other_seed[0]["eval_detail"] == stored and not other_seed[1]["from_cache"]
    fewer_tasks = run("fewer-tasks", "--eval-tasks", "1")
    assert not fewer_tasks[0]["from_cache"] and len(entries()) == 6


def test_missing_context_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = distill(capsys, "--env", "math", "--store", str(tmp_path / "exp.db"), "--out-dir", str(tmp_path / "run"))
    assert code != 0
    assert "no knowledge decision" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no empty store left behind
    ExperienceStore.open(tmp_path / "exp.db").close()  # an existing store without a selected set
    code, _, stderr = distill(capsys, "--env", "math", "--store", str(tmp_path / "exp.db"), "--out-dir", str(tmp_path / "run"))
    assert code != 0 and "no knowledge decision" in stderr and "reflect" in stderr


def test_env_args_are_parsed_and_a_bad_one_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, DistillConfig)
    config = from_arguments(parser.parse_args(["--env", "sokoban", "--env-args", "max_turns=3", "rules=full"]), DistillConfig)
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


def test_resume_refuses_other_settings_in_one_line(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, store = tmp_path / "run", tmp_path / "exp.db"
    args = tiny_run_args(tiny_model_dir, out, store, steps=1)
    assert distill(capsys, *args)[0] == 0
    written = {path: path.read_bytes() for path in [*out.rglob("*"), store] if path.is_file()}
    other_context = [*args[: args.index("handbook")], "system_prompt", *args[args.index("handbook") + 1 :]]
    code, _, stderr = distill(capsys, *other_context, "--lr", "5e-3", "--seed", "3", "--resume")
    assert code == 2 and "cannot resume" in stderr and "Traceback" not in stderr
    assert "--lr 0.0001 -> 0.005; --seed 0 -> 3; context handbook sha256:" in stderr and "-> system_prompt sha256:" in stderr
    code, _, stderr = distill(capsys, *args, "--steps", "2", "--dtype", "bfloat16", "--resume")
    assert code == 2 and "--dtype float32 -> bfloat16" in stderr
    assert {path: path.read_bytes() for path in [*out.rglob("*"), store] if path.is_file()} == written  # untouched

    allowed = ["--eval-every", "0", "--save-every", "0", "--eval-cache", str(tmp_path / "cache.json"), "--max-batch-tokens", "512"]
    code, _, stderr = distill(capsys, *args, "--steps", "2", *allowed, "--resume")  # these cannot change what is trained
    assert code == 0, stderr
    assert (out / "latest").read_text() == "step-000002"
    code, _, stderr = distill(capsys, *args, "--steps", "1", "--resume")
    assert code == 2 and "--steps 1 is below the checkpoint's step 2" in stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--temperature", "nan", "argument --temperature: must be a finite number, got nan"),
        ("--lr", "inf", "argument --lr: must be a finite number, got inf"),
        ("--top-p", "0", "top_p must be a finite number in (0, 1], got 0.0"),
        ("--weight-decay", "-1", "weight_decay must be a finite number >= 0, got -1.0"),
        ("--grad-clip", "nan", "argument --grad-clip: must be a finite number, got nan"),
        ("--episodes-per-step", "0", "episodes_per_step must be >= 1, got 0"),
    ],
)
def test_a_number_out_of_range_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    code, _, stderr = distill(capsys, "--env", "qa", "--env-context", "handbook", "--store", str(tmp_path / "exp.db"),
                              "--out-dir", str(tmp_path / "run"), flag, value)  # fmt: skip
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content", "message"), [("", "is empty"), (b"\x00\x01binary", "is not text: it holds NUL bytes"), (None, "is a directory")])
def test_a_bad_context_file_is_named_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes | None, message: str
) -> None:
    context = tmp_path / "context.txt"
    write_context(context, content)
    for source in ("--context", "--system-prompt"):
        code, _, stderr = distill(capsys, "--env", "qa", source, str(context), "--store", str(tmp_path / "exp.db"),
                                  "--out-dir", str(tmp_path / "run"))  # fmt: skip
        assert code == 2 and f"context file {context} {message}" in stderr
    assert list(tmp_path.iterdir()) == [context]


def test_a_broken_model_folder_is_named_before_anything_is_written(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, stderr = distill(capsys, *tiny_run_args(str(model), tmp_path / "run", tmp_path / "exp.db"))
    assert code == 2 and f"model folder {model}: model.safetensors is not a complete safetensors file" in stderr
    assert list(tmp_path.iterdir()) == [model]
