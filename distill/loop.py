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
from agents.evaluate import PassRate, paired_difference
from agents.models import ModelNotFound
from common.cli import one_line_errors
from common.config import add_arguments, from_arguments
from distill.config import DistillConfig
from distill.plots import plot_rounds
from distill.presets import PRESETS, expand
from distill.rounds import LOOP_SETS, LoopConfig, RoundResult, run_rounds
from experience_store.selection import ReflectConfig
from experience_store import ExperienceStore, StoreError

console = Console()
errors = Console(stderr=True)
ERRORS = (StoreError, ModelNotFound, ValueError, KeyError, FileExistsError)  # one line each, exit 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill.loop", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), help="start from a named set of flags (distill/presets.py)")
    parser.add_argument("--print-preset", action="store_true", help="print the flags the command expands to and exit")
    parser.add_argument("--store", type=Path, required=True, help="experience store (created if missing)")
    add_arguments(parser.add_argument_group("the loop"), LoopConfig)
    add_arguments(parser.add_argument_group("reflection and the gate"), ReflectConfig, prefix="reflect-", exclude=LOOP_SETS)
    add_arguments(parser.add_argument_group("distillation"), DistillConfig)
    parser.set_defaults(out_dir=Path("runs/loop"), ood_env=None)
    return parser.parse_args(argv)


def rounds_table(results: list[RoundResult], base: DistillConfig) -> Table:
    """Per round, the gate's verdict and one row per evaluation: its pass rate and, paired on the same test
    tasks, its change from the round's start model without context (the OOD env: after against before)."""
    table = Table(title=f"{base.env}: collect -> reflect -> gate -> OPCD, {base.eval_split} split (greedy). Change: "
                        "paired on the same tasks, points [95% interval] and exact McNemar p")  # fmt: skip
    for column in ("round", "evaluation", "pass rate [95%]", "change", "tasks"):
        table.add_column(column, justify="left" if column == "evaluation" else "right")
    for r in results:
        table.add_row(str(r.round), f"gate (validation): {r.verdict}", "", "", "")
        start = PassRate.from_dict(r.before["student"])
        rows = [("start, no context", start, None)]
        if not r.distilled:
            table.add_row(str(r.round), "nothing distilled: the gate refused the knowledge (--force-distill overrides)",
                          "", "", "")  # fmt: skip
            rows += [("start, best refused candidate in context", PassRate.from_dict(r.before["student_with_context"]), start)]
        else:
            rows += [("start, knowledge in context", PassRate.from_dict(r.before["student_with_context"]), start),
                     ("after OPCD, no context", PassRate.from_dict(r.after["student"]), start)]  # fmt: skip
        if "ood" in r.after:
            ood = PassRate.from_dict(r.before["ood"])
            rows += [(f"OOD {base.ood_env}, start", ood, None),
                     (f"OOD {base.ood_env}, after OPCD", PassRate.from_dict(r.after["ood"]), ood)]  # fmt: skip
        for label, rate, reference in rows:
            change = paired_difference(reference, rate) if reference is not None else None
            table.add_row(str(r.round), label, str(rate), str(change or ""), change.counts if change else "")
        table.add_section()
    table.caption = "mean reply tokens while collecting: " + ", ".join(
        f"round {r.round} {r.mean_reply_tokens:.0f}" for r in results
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
    with one_line_errors(ERRORS, "interrupted: run the same command again to resume", out=errors, err=errors):
        args.env = envs.spec(args.env).name
        if args.ood_env:
            args.ood_env = envs.spec(args.ood_env).name
        base, loop = from_arguments(args, DistillConfig), from_arguments(args, LoopConfig)
        reflection = from_arguments(args, ReflectConfig, prefix="reflect-")  # LOOP_SETS: run_rounds sets them
        with ExperienceStore.open(args.store) as store:
            results = run_rounds(
                base, loop, store, reflection,
                on_phase=lambda r, name: console.rule(f"round {r}/{loop.rounds}: {name}"),
                on_round=lambda r: console.print(rounds_table([r], base)),
            )
        console.print(rounds_table(results, base))
        for r in results:
            if not r.distilled:
                console.print(f"round {r.round}: the gate refused the knowledge, nothing was distilled: {r.verdict}",
                              soft_wrap=True)  # fmt: skip
        plot = plot_rounds([r.as_dict() for r in results], base.out_dir)
        if plot:
            console.print(f"plot: {plot}")
        if results:
            console.print(f"final model: {results[-1].checkpoint}")


if __name__ == "__main__":
    main()
