"""Context gap: for each installed model and each env context, the pass rate without and with it.

Run: ``python -m bench.context_gap [--models ...] [--envs ...] [--tasks 40] [--write docs/models.md]``.
Greedy decoding on the validation split; 95% Wilson intervals. The table says which (model, env,
context) triples have a gap worth distilling: rerun it whenever an env, a prompt or a context changes.
Each pass rate, with every task's outcome, is appended to ``--results`` (default
``docs/context_gap.jsonl``) as it finishes, keyed by model, env (its versioned Gymnasium id), context,
split, task count and reply length; a rerun measures only what is missing, so delete the file (or its
lines) after changing a prompt or a model. The gap is paired: with and without the context on the same
tasks, the difference with its 95% interval and the exact McNemar p-value.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

import envs
from agents.agent import Agent, env_context
from agents.evaluate import PassRate, paired_difference, pass_rate
from agents.hf_backend import HFBackend
from agents.llm import SamplingParams
from agents.models import DEFAULT_MODEL, MODELS, ModelNotFound, resolve_model

Row = tuple[str, str, str, PassRate, PassRate]  # model, env, context, without, with


def installed_models() -> list[str]:
    found = []
    for name in MODELS:
        try:
            resolve_model(name)
            found.append(name)
        except ModelNotFound:
            pass
    return found


class Results:
    """Measured pass rates, one JSON line each, so that a stopped run resumes where it stopped."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rates: dict[str, PassRate] = {}
        self.seconds: dict[str, float] = {}
        self.used: set[str] = set()
        if path is not None and path.exists():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    record = json.loads(line)
                    self.rates[record["key"]] = PassRate.from_dict(record)
                    self.seconds[record["key"]] = float(record["seconds"])
                except (ValueError, KeyError, TypeError) as error:
                    raise SystemExit(f"{path}:{number}: not a context-gap result ({error}); fix or delete the line")

    @staticmethod
    def key(model: str, env_name: str, context: str, split: str, tasks: int, max_new_tokens: int) -> str:
        return f"{model}|{envs.spec(env_name).gym_id}|{context or '-'}|{split}|{tasks}|{max_new_tokens}"

    def measure(self, key: str, run: Callable[[], PassRate]) -> PassRate:
        if key not in self.rates:
            start = time.perf_counter()
            self.rates[key] = rate = run()
            self.seconds[key] = round(time.perf_counter() - start, 1)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as out:
                    record = {"key": key, **rate.as_dict(), "seconds": self.seconds[key]}
                    out.write(json.dumps(record) + "\n")
        self.used.add(key)
        return self.rates[key]

    def total_seconds(self) -> float:
        """Measuring time of every result this run used, including those measured by earlier runs."""
        return sum(self.seconds[key] for key in self.used)


def measure(
    model: str, env_names: list[str], split: str, tasks: int, max_new_tokens: int, results: Results, console: Console
) -> list[Row]:
    """Pass rates of ``model`` without and with each env context (taken from ``results`` where measured)."""
    llm: HFBackend | None = None
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)

    def rate(env_name: str, context_name: str, n: int) -> PassRate:
        def run() -> PassRate:
            nonlocal llm
            llm = llm or HFBackend(model)
            env = envs.make(env_name)
            context = env_context(env, env_name, context_name) if context_name else None
            return pass_rate(Agent(llm, params, context), env_name, split, n)

        return results.measure(Results.key(model, env_name, context_name, split, n, max_new_tokens), run)

    rows: list[Row] = []
    for env_name in env_names:
        env = envs.make(env_name)
        n = min(tasks, env.split_sizes[split])
        for name in env.contexts():
            row = (model, env_name, name, rate(env_name, "", n), rate(env_name, name, n))
            console.print(f"{model} {env_name} {name}: without {row[3]}  with {row[4]}")
            rows.append(row)
    return rows


def markdown(rows: list[Row], command: str, split: str, seconds: float) -> str:
    lines = [
        "# Context gap: what each model does with and without each env's context",
        "",
        f"Generated by `{command}` on {date.today().isoformat()} ({platform.machine()}, "
        f"{platform.processor() or 'CPU'}, no GPU; {seconds / 60:.0f} minutes of measuring). Greedy decoding, the {split} split "
        "(distinct tasks; a split smaller than the task count is used whole), 95% Wilson intervals; the gap is paired on "
        "the same tasks (Bonett-Price 95% interval, exact McNemar p). A context is one the env "
        "ships (`env.contexts()`): `handbook` and `system_prompt` (qa), `rules` (frozenlake, sokoban: the full "
        "rules the default instructions leave out), `worked_example` (math).",
        "",
        "| model | env | context | without | with | gap: points [95%] McNemar p | tasks gained/lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, env_name, name, without, with_context in rows:
        gap = paired_difference(without, with_context)
        lines.append(f"| {model} | {env_name} | {name} | {without} | {with_context} | {gap} | {gap.counts} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help=f"default: every installed one of {', '.join(MODELS)}")
    parser.add_argument("--envs", nargs="+", default=envs.names())
    parser.add_argument("--split", default="validation", choices=envs.SPLITS)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--write", type=Path, help="write the table as Markdown to this file")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("docs/context_gap.jsonl"),
        help="measured pass rates, appended as they finish and reused on a rerun with the same settings",
    )
    args = parser.parse_args(argv)
    console = Console()
    models = args.models or installed_models() or [DEFAULT_MODEL]
    results = Results(args.results)
    rows = [
        row
        for model in models
        for row in measure(model, args.envs, args.split, args.tasks, args.max_new_tokens, results, console)
    ]
    table = Table(title=f"Context gap ({args.split}, greedy)")
    for column in ("model", "env", "context", "without", "with", "gap [95%] p", "tasks"):
        table.add_column(column, justify="left" if column in ("model", "env", "context") else "right")
    for model, env_name, name, without, with_context in rows:
        gap = paired_difference(without, with_context)
        table.add_row(model, env_name, name, str(without), str(with_context), str(gap), gap.counts)
    console.print(table)
    if args.write:
        command = "python -m bench.context_gap " + " ".join(argv if argv is not None else sys.argv[1:])
        args.write.write_text(markdown(rows, command.strip(), args.split, results.total_seconds()), encoding="utf-8")
        console.print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
