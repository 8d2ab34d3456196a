"""The collect -> reflect -> distill loop from the command line.

    python -m distill.loop --env math --rounds 3 --store exp.db [--model smollm2-135m]
    python -m distill.loop --env math --rounds 3 --store exp.db        # again: resumes where it stopped
    python -m distill.loop --preset demo                               # the README's demo (distill/presets.py)

A composition root: it builds the configs and calls ``distill.rounds.run_rounds``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import envs
from agents.evaluate import PassRate, paired_difference
from agents.models import ModelNotFound
from distill.config import DistillConfig, add_arguments, from_arguments
from distill.plots import plot_rounds
from distill.presets import PRESETS, expand
from distill.rounds import LoopConfig, RoundResult, run_rounds
from experience_store import ExperienceStore, StoreError

console = Console()
errors = Console(stderr=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill.loop", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), help="start from a named set of flags (distill/presets.py)")
    parser.add_argument("--print-preset", action="store_true", help="print the flags the command expands to and exit")
    parser.add_argument("--store", type=Path, required=True, help="experience store (created if missing)")
    add_arguments(parser, LoopConfig)
    add_arguments(parser, DistillConfig)
    parser.set_defaults(out_dir=Path("runs/loop"), ood_env=None)
    return parser.parse_args(argv)


def rate(result: dict[str, Any]) -> str:
    return str(PassRate.from_dict(result))


def change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The paired change from ``before`` to ``after`` on the same tasks: points [95% interval] p=McNemar."""
    return str(paired_difference(PassRate.from_dict(before), PassRate.from_dict(after)))


def rounds_table(results: list[RoundResult], base: DistillConfig) -> Table:
    """Per round: the start model with and without the round's context, and after OPCD, each compared
    with the start model without context on the same tasks (paired)."""
    table = Table(title=f"{base.env}: collect -> reflect -> OPCD, {base.eval_split} split (greedy). Changes: "
                        "paired on the same tasks, points [95% interval] and exact McNemar p")  # fmt: skip
    columns = ("round", "base (no context)", "in-context", "in-context - base", "OPCD (no context)", "OPCD - base",
               "OOD before", "OOD after", "OOD after - before", "reply tokens")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        student, in_context, distilled = r.before["student"], r.before["student_with_context"], r.after["student"]
        ood = ([rate(r.before["ood"]), rate(r.after["ood"]), change(r.before["ood"], r.after["ood"])]
               if "ood" in r.after else ["-", "-", "-"])  # fmt: skip
        table.add_row(
            str(r.round), rate(student), rate(in_context), change(student, in_context),
            rate(distilled), change(student, distilled), *ood, f"{r.mean_reply_tokens:.0f}",
        )
    return table


def main(argv: list[str] | None = None) -> None:
    typed = sys.argv[1:] if argv is None else argv
    try:
        expanded = expand(typed)
    except ValueError as err:
        errors.print(f"[red]error:[/] {err}")
        sys.exit(2)
    if "--print-preset" in expanded:
        print("python -m distill.loop " + shlex.join(a for a in expanded if a != "--print-preset"))
        return
    args = parse_args(expanded)
    try:
        args.env = envs.spec(args.env).name
        if args.ood_env:
            args.ood_env = envs.spec(args.ood_env).name
        base, loop = from_arguments(args, DistillConfig), from_arguments(args, LoopConfig)
        with ExperienceStore.open(args.store) as store:
            results = run_rounds(
                base, loop, store,
                on_phase=lambda r, name: console.rule(f"round {r}/{loop.rounds}: {name}"),
                on_round=lambda r: console.print(rounds_table([r], base)),
            )
        console.print(rounds_table(results, base))
        if results:
            console.print(f"plot: {plot_rounds([r.as_dict() for r in results], base.out_dir)}")
            console.print(f"final model: {results[-1].checkpoint}")
    except (StoreError, ModelNotFound, ValueError, KeyError, FileExistsError) as err:
        errors.print(f"[red]error:[/] {err.args[0] if isinstance(err, KeyError) else err}")
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted: run the same command again to resume[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
