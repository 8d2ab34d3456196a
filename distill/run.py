"""On-Policy Context Distillation from the command line.

    python -m distill.run --store exp.db --env math            # the knowledge set the gate accepted
    python -m distill.run --env qa --system-prompt prompt.txt  # system prompt distillation
    python -m distill.run --env qa --env-context handbook      # internalise the QA handbook
    python -m distill.run --store exp.db --env math --resume   # continue a killed run
    accelerate launch --num_processes 2 -m distill.run ...     # data parallel

A composition root: it builds the config and the context, then calls ``distill.training.train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import envs
from agents.agent import Context, context_from_file, env_context
from agents.evaluate import PassRate, paired_difference
from agents.models import ModelNotFound, resolve_device, resolve_model
from common.cli import one_line_errors
from common.config import add_arguments, from_arguments
from distill.config import DistillConfig
from distill.training import EvalResults, train
from experience_store import ExperienceStore, StoreError
from experience_store.knowledge import knowledge_text
from experience_store.selection import latest_decision

console = Console()
errors = Console(stderr=True)
ERRORS = (StoreError, ModelNotFound, ValueError, KeyError, FileExistsError)  # one line each, exit 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill.run", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--context", type=Path, help="a text file: the context the teacher sees (knowledge)")
    source.add_argument("--system-prompt", type=Path, help="a text file: the teacher's system prompt")
    source.add_argument(
        "--env-context", metavar="NAME",
        help="a context the env ships: qa handbook/system_prompt, frozenlake/sokoban rules, math worked_example",
    )
    parser.add_argument(
        "--context-kind", default="knowledge", choices=["knowledge", "handbook", "traces"],
        help="how --context is placed in the system message (a delimited block after the instructions)",
    )
    parser.add_argument("--store", type=Path, help="experience store: the run is recorded here, and without "
                        "another context source the knowledge set the gate accepted is the context")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out-dir")
    parser.add_argument("--force-distill", action="store_true", help="with --store: distil the best candidate even "
                        "when the gate found no knowledge set better than no context")
    add_arguments(parser, DistillConfig)
    return parser.parse_args(argv)


def given_context(args: argparse.Namespace) -> Context | None:
    """The context of --context, --system-prompt or --env-context; None when none of them is given."""
    if args.context:
        return context_from_file(args.context, args.context_kind)
    if args.system_prompt:
        return context_from_file(args.system_prompt, "system_prompt")
    if args.env_context:
        return env_context(envs.make(args.env), args.env, args.env_context)
    return None


def stored_context(args: argparse.Namespace, store: ExperienceStore | None, model: str) -> Context:
    """The knowledge set that the gate's newest decision for (env, ``model``: the teacher, who holds the
    context) in --store accepted (with --force-distill: its best candidate when it accepted none)."""
    if store is None:
        raise ValueError("give a context: --store (the gate's accepted knowledge set), --context, --system-prompt or --env-context")
    decision = latest_decision(store, args.env, model=model)
    if decision is None:
        others = latest_decision(store, args.env)
        scored = f" (it has one for {others.model}, which is not this run's teacher)" if others else ""
        raise ValueError(f"{store.path} has no knowledge decision for env {args.env!r} and model {model}{scored}; run "
                         f"`python -m experience_store reflect --store {store.path} --env {args.env} --agent-model {model}` "
                         "first, or pass --context")  # fmt: skip
    chosen = store.knowledge_set(decision.context_set(force=args.force_distill))
    return Context(knowledge_text(chosen.items), "knowledge", id=chosen.uuid)


def results_table(before: EvalResults, after: EvalResults, config: DistillConfig) -> Table:
    """Before and after on the test split, each row's paired change, and in-context against no context."""
    table = Table(title=f"{config.method.upper()} on {config.env} ({config.eval_split} split, greedy). Change: "
                        "paired on the same tasks, points [95% interval] and exact McNemar p; tasks gained/lost")  # fmt: skip
    for column in ("", "before", "after", "change", "tasks"):
        table.add_column(column, justify="left" if not column else "right")
    labels = {
        "student": "student, no context",
        "student_with_context": "with context (in-context)",
        "ood": f"OOD env ({config.ood_env})",
    }

    def add(label: str, first: PassRate, last: PassRate, shown: bool = True) -> None:
        change = paired_difference(first, last)
        cells = (str(first), str(last)) if shown else ("", "")
        table.add_row(label, *cells, str(change), change.counts)

    for key, label in labels.items():
        if key in before:
            add(label, PassRate.from_dict(before[key]), PassRate.from_dict(after[key]))
    base, in_context = PassRate.from_dict(before["student"]), PassRate.from_dict(before["student_with_context"])
    add("in-context - no context, before", base, in_context, shown=False)
    add(f"{config.method.upper()} (no context) - in-context", in_context, PassRate.from_dict(after["student"]), shown=False)
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with one_line_errors(ERRORS, "interrupted: resume with --resume (from the last checkpoint)", out=console, err=errors):
        args.env = envs.spec(args.env).name  # one name per env in the store, whichever alias was typed
        if args.ood_env:
            args.ood_env = envs.spec(args.ood_env).name
        config = from_arguments(args, DistillConfig)
        context = given_context(args)
        for name in filter(None, (config.model, config.teacher)):
            resolve_model(name)  # a missing or broken model is an error before anything is written
        resolve_device(config.device)  # so is a missing GPU
        if context is None and args.store and not args.store.exists():  # not created just to say so
            raise ValueError(f"{args.store} does not exist, so it has no knowledge decision for env "
                             f"{args.env!r}; pass --context, --system-prompt or --env-context")  # fmt: skip
        store = ExperienceStore.open(args.store) if args.store else None
        context = context or stored_context(args, store, config.teacher or config.model)  # who holds the context
        progress = Progress(
            TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        task = progress.add_task("distill", total=config.steps, status="evaluating before training...")

        def on_step(step: int, m: dict[str, float]) -> None:
            rate = m["reply_tokens"] / (m["seconds_sample"] + m["seconds_update"])
            progress.update(task, completed=step, status=f"loss {m['loss']:.4f}  entropy {m['student_entropy']:.2f}  {rate:.0f} tok/s")

        def on_eval(step: int, split: str, results: EvalResults) -> None:
            summary = "  ".join(f"{k} {100 * r['rate']:.0f}%" for k, r in results.items())
            progress.console.print(f"step {step} ({split}): {summary}")

        with progress:
            result = train(config, context, store=store, resume=args.resume, on_step=on_step, on_eval=on_eval)
        console.print(results_table(result.before, result.after, config))
        console.print(f"checkpoint: {result.checkpoint}  (play it: python -m agents.play --model {result.checkpoint} --env {config.env})")
        console.print(f"metrics: {result.metrics_path}, plots: {config.out_dir}/training.png, {config.out_dir}/evaluation.png")


if __name__ == "__main__":
    main()
