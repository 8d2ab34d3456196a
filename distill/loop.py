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

from rich.console import Console
from rich.table import Table

import envs
from agents.evaluate import PassRate
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


def rate(result: dict[str, float]) -> str:
    return str(PassRate(int(result["successes"]), int(result["n"])))


def rounds_table(results: list[RoundResult], base: DistillConfig) -> Table:
    table = Table(title=f"{base.env}: collect -> reflect -> OPCD, {base.eval_split} split (greedy)")
    for column in ("round", "base (no context)", "in-context", "OPCD (no context)", "OOD before", "OOD after", "reply tokens"):
        table.add_column(column, justify="right")
    for r in results:
        ood = [rate(r.before["ood"]), rate(r.after["ood"])] if "ood" in r.after else ["-", "-"]
        table.add_row(
            str(r.round), rate(r.before["student"]), rate(r.before["student_with_context"]),
            rate(r.after["student"]), *ood, f"{r.mean_reply_tokens:.0f}",
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
