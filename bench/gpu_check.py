"""GPU check: the GPU paths end to end, in under 8 minutes on one GPU (``make gpu-check``).

Run: ``python -m bench.gpu_check [--device cuda] [--model smollm2-135m] [--out-dir runs/gpu-check]``.
Each check is its CLI in a process of its own: a 3-step ``distill.run`` on ``--device cuda --dtype
bfloat16``, ``agents.play --backend vllm`` for a few episodes, ``bench.rollout`` hf against vllm, and a
2-step ``distill.run --backend vllm``. Prints one line per check (ok / FAILED / skipped, seconds), then a
table of figures; exits 1 if any check failed. Each run writes a new folder ``<out-dir>/<date-time>``, where
every check's output is kept in ``<check>.log``.

``--device cpu`` is a smoke run of the same structure on a CPU: the vllm checks are skipped, sizes are tiny.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agents.models import DEFAULT_MODEL
from experience_store import ExperienceStore

BUDGET_S = 470.0  # all checks together, under 8 minutes
Figures = dict[str, str]


@dataclass
class Check:
    """A CLI (``python -m`` ``argv``) run as a check; ``figures`` reads what it measured (given its stdout)."""

    name: str
    argv: list[str]
    timeout_s: float
    figures: Callable[[str], Figures]
    needs_vllm: bool = False


@dataclass
class Result:
    name: str
    status: str  # ok, FAILED or skipped
    seconds: float
    note: str = ""
    figures: Figures = field(default_factory=dict)


def distill_figures(run_dir: Path) -> Figures:
    """The last step's loss and the mean reply tokens per second of the steps, from the run's metrics log."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    steps = [r for r in map(json.loads, lines) if "train/loss" in r]
    seconds = sum(r["train/seconds_sample"] + r["train/seconds_update"] for r in steps)
    return {
        "steps": str(len(steps)),
        "last loss": f"{steps[-1]['train/loss']:.4f}",
        "reply tokens/s": f"{sum(r['train/reply_tokens'] for r in steps) / seconds:.1f}",
        "seconds/step": f"{seconds / len(steps):.1f}",
    }


def play_figures(store: Path) -> Figures:
    with ExperienceStore.open(store, readonly=True) as s:
        return {"episodes stored": str(s.count_episodes())}


def rollout_figures(stdout: str) -> Figures:
    """Tokens/s of each row of ``bench.rollout``'s table."""
    figures = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) > 3 and re.fullmatch(r"\d+(\.\d+)?", cells[2]):
            figures[f"{cells[1]}: tokens/s"] = cells[2]
    if not figures:
        raise ValueError("no rows in bench.rollout's table")
    return figures


def checks(device: str, model: str, out: Path) -> list[Check]:
    gpu = device != "cpu"
    dtype = "bfloat16" if gpu else "float32"
    tokens, tasks, episodes = ("32", "8", "4") if gpu else ("4", "2", "2")

    def distill(name: str, steps: int, *extra: str) -> Check:
        argv = [
            "distill.run", "--env", "qa", "--env-context", "handbook", "--model", model, "--device", device,
            "--dtype", dtype, "--steps", str(steps), "--episodes-per-step", episodes, "--max-new-tokens", tokens,
            "--eval-tasks", tasks, "--eval-max-new-tokens", tokens, "--eval-every", "0", "--save-every", "0",
            "--out-dir", str(out / name), *extra,
        ]
        return Check(name, argv, 180, lambda stdout: distill_figures(out / name), needs_vllm="vllm" in extra)

    play = [
        "agents.play", "--backend", "vllm", "--device", "cuda", "--dtype", dtype, "--env", "qa", "--model", model,
        "--episodes", episodes, "--max-new-tokens", tokens, "--store", str(out / "play.db"),
    ]
    rollout = [
        "bench.rollout", "--env", "qa", "--model", model, "--device", device, "--dtype", dtype,
        "--episodes", episodes, "--max-new-tokens", tokens, *(["--vllm"] if gpu else []),
    ]
    return [
        distill("distill-hf", 3),
        Check("play-vllm", play, 150, lambda stdout: play_figures(out / "play.db"), needs_vllm=True),
        Check("rollout", rollout, 180, rollout_figures),  # vllm's row on a GPU only
        distill("distill-vllm", 2, "--backend", "vllm"),
    ]


def run_check(check: Check, out: Path, seconds_left: float) -> Result:
    """Run ``check`` within its timeout and the time left; its output goes to ``<out>/<name>.log``."""
    started = time.perf_counter()
    env = {**os.environ, "COLUMNS": "200"}  # rich tables on one line per row
    try:
        done = subprocess.run(
            [sys.executable, "-m", *check.argv], capture_output=True, text=True, env=env,
            timeout=max(1.0, min(check.timeout_s, seconds_left)),
        )
        stdout, stderr, failure = done.stdout, done.stderr, f"exit {done.returncode}" if done.returncode else ""
    except subprocess.TimeoutExpired as err:
        stdout, stderr = _text(err.stdout), _text(err.stderr)
        failure = f"timed out after {err.timeout:.0f} s"
    seconds = time.perf_counter() - started
    (out / f"{check.name}.log").write_text(f"$ python -m {' '.join(check.argv)}\n{stdout}\n{stderr}", encoding="utf-8")
    if failure:
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        return Result(check.name, "FAILED", seconds, f"{failure}: {last[:160]}")
    try:
        return Result(check.name, "ok", seconds, figures=check.figures(stdout))
    except (OSError, ValueError, KeyError, IndexError, ZeroDivisionError) as err:
        return Result(check.name, "FAILED", seconds, f"its figures: {err!r}"[:200])


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N; cpu: a smoke run without the vllm checks")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/gpu-check"))
    args = parser.parse_args(argv)
    console = Console()
    out = args.out_dir / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)  # a new folder: no check resumes an earlier run or adds to an earlier store
    deadline = time.perf_counter() + BUDGET_S
    results = []
    for check in checks(args.device, args.model, out):
        if check.needs_vllm and args.device == "cpu":
            result = Result(check.name, "skipped", 0.0, "needs a GPU and vllm")
        else:
            result = run_check(check, out, deadline - time.perf_counter())
        console.print(f"{result.status:<8} {result.name:<14} {result.seconds:6.1f} s  {result.note}", markup=False)
        results.append(result)
    table = Table(title=f"GPU check figures ({args.device}, {args.model})")
    for column in ("check", "figure", "value"):
        table.add_column(column)
    for result in results:
        for name, value in result.figures.items():
            table.add_row(result.name, name, value)
    console.print(table)
    console.print(f"logs: {out}", markup=False)
    return 1 if any(r.status == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
