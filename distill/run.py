"""On-Policy Context Distillation from the command line.

    python -m distill.run --store exp.db --env math            # the env's selected knowledge set
    python -m distill.run --env qa --system-prompt prompt.txt  # system prompt distillation
    python -m distill.run --env qa --env-context handbook      # internalise the QA handbook
    python -m distill.run --store exp.db --env math --resume   # continue a killed run
    accelerate launch --num_processes 2 -m distill.run ...     # data parallel

A composition root: it builds the config and the context, then calls ``distill.training.train``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import envs
from agents.agent import Context, env_context
from agents.evaluate import PassRate
from agents.models import ModelNotFound
from distill.config import DistillConfig, add_arguments, from_arguments
from distill.training import EvalResults, train
from experience_store import ExperienceStore, StoreError
from experience_store.knowledge import knowledge_text

console = Console()
errors = Console(stderr=True)


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
                        "another context source the env's selected knowledge set is the context")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out-dir")
    add_arguments(parser)
    return parser.parse_args(argv)


def load_context(args: argparse.Namespace, store: ExperienceStore | None) -> Context:
    if args.context or args.system_prompt:
        path = args.context or args.system_prompt
        if not path.is_file():
            raise ValueError(f"{path} does not exist")
        kind = args.context_kind if args.context else "system_prompt"
        return Context(path.read_text(encoding="utf-8"), kind, id=str(path))
    if args.env_context:
        return env_context(envs.make(args.env), args.env, args.env_context)
    if store is None:
        raise ValueError("give a context: --store (selected knowledge set), --context, --system-prompt or --env-context")
    selected = store.selected_knowledge_set(args.env)
    if selected is None:
        raise ValueError(f"{store.path} has no selected knowledge set for env {args.env!r}; run "
            f"`python -m experience_store reflect --store {store.path} --env {args.env}` first, or pass --context"
        )
    return Context(knowledge_text(selected.items), "knowledge", id=selected.uuid)


def results_table(before: EvalResults, after: EvalResults, config: DistillConfig) -> Table:
    table = Table(title=f"{config.method.upper()} on {config.env} ({config.eval_split}, greedy)")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    labels = {
        "student": "student, no context",
        "student_with_context": "with context (in-context)",
        "ood": f"OOD env ({config.ood_env})",
    }
    for key, label in labels.items():
        if key in before:
            cells = [str(PassRate(int(r["successes"]), int(r["n"]))) for r in (before[key], after[key])]
            table.add_row(label, *cells)
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        args.env = envs.spec(args.env).name  # one name per env in the store, whichever alias was typed
        if args.ood_env:
            args.ood_env = envs.spec(args.ood_env).name
        config = from_arguments(args)
        store = ExperienceStore.open(args.store) if args.store else None
        context = load_context(args, store)
        progress = Progress(
            TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        task = progress.add_task("distill", total=config.steps, status="evaluating before training...")

        def on_step(step: int, m: dict[str, float]) -> None:
            rate = m["reply_tokens"] / (m["seconds_sample"] + m["seconds_update"])
            progress.update(task, completed=step, status=f"loss {m['loss']:.4f}  entropy {m['student_entropy']:.2f}  {rate:.0f} tok/s")

        def on_eval(step: int, results: EvalResults) -> None:
            summary = "  ".join(f"{k} {100 * r['rate']:.0f}%" for k, r in results.items())
            progress.console.print(f"step {step}: {summary}")

        with progress:
            result = train(config, context, store=store, resume=args.resume, on_step=on_step, on_eval=on_eval)
        console.print(results_table(result.before, result.after, config))
        console.print(f"checkpoint: {result.checkpoint}  (play it: python -m agents.play --model {result.checkpoint} --env {config.env})")
        console.print(f"metrics: {result.metrics_path}, plots: {config.out_dir}/training.png, {config.out_dir}/evaluation.png")
    except (StoreError, ModelNotFound, ValueError, KeyError, FileExistsError) as err:
        errors.print(f"[red]error:[/] {err.args[0] if isinstance(err, KeyError) else err}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: resume with --resume (from the last checkpoint)[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
