"""Command line for experience stores: ``python -m experience_store <command> --store exp.db``.

Commands: stats, episodes, show, knowledge, reflect, runs, export, import, merge, check. Reading commands
open the store read-only. An error is one line on stderr and exit status 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agents.evaluate import PassRate
from experience_store.decision import KnowledgeDecision
from experience_store.errors import StoreError
from experience_store.jsonl import RECORD_TYPES, TransferCounts, check_jsonl, export_jsonl, import_jsonl, merge_stores
from experience_store.knowledge import knowledge_text, trace_text
from experience_store.records import KNOWLEDGE_KINDS, RUN_STATUSES, KnowledgeSet
from experience_store.reflect_command import add_reflect_arguments, cmd_reflect
from experience_store.selection import latest_decision
from experience_store.show import console, format_time, print_episode
from experience_store.store import ExperienceStore

CLI_TIMEOUT = 10.0
MAX_TIMEOUT = 86_400.0  # seconds: a lock wait longer than a day is a mistake


def _when(text: str) -> float:
    """A time argument: unix seconds or an ISO date / datetime (local time unless it has an offset)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (unix seconds, or e.g. 2026-11-26T14:00)") from None


def _integer(low: int, high: int) -> Callable[[str], int]:
    """An argument type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


_positive = _integer(1, 2**31 - 1)  # counts and lengths
_round = _integer(0, 2**63 - 1)


def _number(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _nonnegative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _timeout(text: str) -> float:
    value = _nonnegative(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIMEOUT:,.0f} seconds, got {text}")
    return value


def _short(text: str, width: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _open(args: argparse.Namespace) -> ExperienceStore:
    return ExperienceStore.open(args.store, readonly=True, timeout=args.timeout)


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        stats = store.stats()
    table = Table(title=f"{stats.path}", show_header=False)
    rows = [
        ("schema version", str(stats.schema_version)),
        ("size", f"{stats.file_bytes / 1e6:,.1f} MB"),
        ("episodes", f"{stats.episodes:,}"),
        ("turns", f"{stats.turns:,}"),
        ("knowledge items", f"{stats.knowledge_items:,}"),
        ("knowledge sets", f"{stats.knowledge_sets:,}"),
        ("distillation runs", f"{stats.runs:,}"),
        ("first episode", format_time(stats.first_episode_at)),
        ("last episode", format_time(stats.last_episode_at)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if stats.groups:
        groups = Table(title="Episodes by env, split and model")
        for column in ("env", "split", "model", "episodes", "success", "mean return", "mean turns", "tokens"):
            groups.add_column(column, justify="left" if column in ("env", "split", "model") else "right")
        for g in stats.groups:
            groups.add_row(
                Text(g.env_id),
                Text(g.split),
                Text(g.model),
                f"{g.episodes:,}",
                f"{g.success_rate:.1%}",
                f"{g.mean_return:.3f}",
                f"{g.mean_turns:.1f}",
                f"{g.prompt_tokens + g.completion_tokens:,}",
            )
        console.print(groups)
    return 0


def _filters(args: argparse.Namespace) -> dict[str, object]:
    return {
        "env": args.env,
        "split": args.split,
        "success": args.success,
        "model": args.model,
        "round": args.round,
        "since": args.since,
        "until": args.until,
    }


def cmd_episodes(args: argparse.Namespace) -> int:
    with _open(args) as store:
        total = store.count_episodes(**_filters(args))
        episodes = list(store.episodes(**_filters(args), limit=args.limit))
    table = Table(title=f"Episodes ({len(episodes):,} of {total:,})")
    for column in ("id", "created", "env", "split", "task", "model", "round", "ok", "return", "turns", "tokens"):
        table.add_column(column, justify="right" if column in ("round", "return", "turns", "tokens") else "left")
    for e in episodes:
        table.add_row(
            e.uuid[:10],
            format_time(e.created_at)[:16],
            Text(e.env_id),
            Text(e.split),
            Text(e.task_id),
            Text(e.model),
            str(e.round),
            Text("✓", style="green") if e.success else Text("✗", style="red"),
            f"{e.total_reward:.3g}",
            str(e.num_turns),
            f"{e.prompt_tokens + e.completion_tokens:,}",
        )
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        episode = store.episode(args.episode)
    print_episode(episode, full=args.full)
    return 0


def cmd_knowledge(args: argparse.Namespace) -> int:
    with _open(args) as store:
        sets = store.knowledge_sets(env=args.env)
        items = store.knowledge_items(env=args.env, kind=args.kind)
        decision = latest_decision(store, args.env) if args.env else None
    exported = _export_knowledge(args, sets, decision) if args.export else ""  # first: a closed stdout must not stop it
    table = Table(title=f"Knowledge sets ({len(sets)})")
    for column in ("id", "created", "env", "round", "items", "tokens", "validation", "selected"):
        table.add_column(column)
    for s in sets:
        score = "-" if s.validation_score is None else f"{s.validation_score:.3f} (n={s.validation_n})"
        selected = Text("✓", style="green") if s.selected else ""
        table.add_row(
            s.uuid[:12], format_time(s.created_at), Text(s.env_id), str(s.round), str(len(s.items)), f"{s.token_count:,}",
            score, selected,
        )
    console.print(table)
    table = Table(title=f"Knowledge items ({len(items)})")
    for column in ("id", "env", "kind", "model", "round", "sources", "text"):
        table.add_column(column)
    for i in items:
        env, sources = Text(i.env_id or "-"), str(len(i.source_episodes))
        table.add_row(i.uuid[:12], env, i.kind, Text(i.model), str(i.round), sources, Text(_short(i.text)))
    console.print(table)
    if args.env:
        if decision is not None:
            console.print(f"the gate, round {decision.round} ({decision.model}): {decision.verdict}", soft_wrap=True)
        selected = next((s for s in sets if s.selected), None)
        if selected is None:
            console.print(f"no knowledge set is selected for {args.env}")
        else:
            console.print(_set_panel(selected))
    if exported:
        console.print(f"wrote {args.export}: use it with {exported}", soft_wrap=True)
    return 0


def _score(s: KnowledgeSet) -> str:
    if s.validation_score is None or s.validation_n is None:
        return "-"
    return str(PassRate(round(s.validation_score * s.validation_n), s.validation_n))


def _set_panel(s: KnowledgeSet) -> Panel:
    title = f"selected knowledge set {s.uuid[:12]} for {s.env_id}: {len(s.items)} items, {s.token_count} tokens"
    return Panel(Text(knowledge_text(s.items)), title=title, subtitle=f"validation {_score(s)}")


def _export_knowledge(args: argparse.Namespace, sets: list[KnowledgeSet], decision: KnowledgeDecision | None) -> str:
    """Write the selected set (or, with --traces, the newest raw-trace set) as a plain-text context file;
    return the command line that uses it."""
    if not args.env:
        raise StoreError("--export needs --env: which env's knowledge to write")
    if args.traces:
        chosen = [s for s in sets if s.items and all(i.kind == "raw_trace" for i in s.items)]
        if not chosen:
            raise StoreError(f"{args.store} has no raw-trace set for env {args.env!r}: run reflect with --baselines")
        args.export.write_text(trace_text(chosen[-1].items) + "\n", encoding="utf-8")
        hint = "--context-kind traces"
    else:
        selected = next((s for s in sets if s.selected), None)
        if selected is None:
            gate = f" (the gate's newest decision: {decision.verdict})" if decision else ""
            raise StoreError(
                f"{args.store} has no selected knowledge set for env {args.env!r}{gate}: "
                f"run python -m experience_store reflect --store {args.store} --env {args.env}"
            )
        args.export.write_text(knowledge_text(selected.items) + "\n", encoding="utf-8")
        hint = "--context-kind knowledge"
    return f"python -m agents.play --context {args.export} {hint}"


def cmd_runs(args: argparse.Namespace) -> int:
    with _open(args) as store:
        runs = store.runs(status=args.status)
    table = Table(title=f"Distillation runs ({len(runs)})")
    for column in ("id", "created", "finished", "status", "steps", "last metrics", "checkpoint"):
        table.add_column(column)
    for r in runs:
        steps = max((points[-1][0] for points in r.metrics.values() if points), default=None)
        shown = list(r.metrics.items())[:4]
        last = "  ".join(f"{name}={points[-1][1]:.4g}" for name, points in shown if points)
        steps_text = "-" if steps is None else str(steps)
        times = (format_time(r.created_at), format_time(r.finished_at))
        table.add_row(r.uuid[:12], *times, r.status, steps_text, Text(last), Text(r.checkpoint_path or "-"))
    console.print(table)
    return 0


def _counts_table(title: str, counts: TransferCounts) -> Table:
    table = Table(title=title)
    for column in ("record", "added", "skipped (already there)"):
        table.add_column(column, justify="left" if column == "record" else "right")
    for kind in RECORD_TYPES:
        table.add_row(kind, f"{counts.added[kind]:,}", f"{counts.skipped[kind]:,}")
    return table


def cmd_export(args: argparse.Namespace) -> int:
    if args.out == "-":
        export_jsonl(args.store, sys.stdout, timeout=args.timeout)
        return 0
    counts = export_jsonl(args.store, args.out, timeout=args.timeout)
    summary = ", ".join(f"{counts[kind]:,} {kind}" for kind in RECORD_TYPES)
    console.print(f"exported {summary} to {args.out}", soft_wrap=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    if args.check_only:
        counts = check_jsonl(args.file, args.store, timeout=args.timeout)
        summary = ", ".join(f"{counts[kind]:,} {kind}" for kind in RECORD_TYPES)
        console.print(f"{args.file}: valid for import into {args.store} ({summary})", soft_wrap=True)
        return 0
    console.print(_counts_table(f"Imported {args.file}", import_jsonl(args.file, args.store, timeout=args.timeout)))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    counts = merge_stores(args.store, args.sources, timeout=args.timeout)
    console.print(_counts_table(f"Merged {len(args.sources)} store(s) into {args.store}", counts))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with _open(args) as store:
        problems = store.check()
        episodes = store.count_episodes()
    if not problems:
        console.print(f"{args.store}: ok ({episodes:,} episodes, integrity and invariants checked)", soft_wrap=True)
        return 0
    for problem in problems:
        console.print(Text(problem))
    print(f"error: {args.store}: {len(problems)} problem(s) found, first: {problems[0]}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experience_store", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", required=True, type=Path, help="the store file, e.g. exp.db")
    common.add_argument(
        "--timeout", type=_timeout, default=CLI_TIMEOUT, help="seconds to wait for a lock (default %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    command("stats", cmd_stats, "totals, and outcomes per env, split and model")
    episodes = command("episodes", cmd_episodes, "list episodes (the filters combine), oldest first")
    episodes.add_argument("--env", help="env name as stored, e.g. math")
    episodes.add_argument("--split", help="train, validation or test")
    outcome = episodes.add_mutually_exclusive_group()
    outcome.add_argument("--success", dest="success", action="store_const", const=True, help="successes only")
    outcome.add_argument("--failure", dest="success", action="store_const", const=False, help="failures only")
    episodes.add_argument("--model", help="model name as stored")
    episodes.add_argument("--round", type=_round, help="self-improvement round")
    episodes.add_argument("--since", type=_when, help="created at or after (unix seconds or ISO time)")
    episodes.add_argument("--until", type=_when, help="created before (unix seconds or ISO time)")
    episodes.add_argument("--limit", type=_positive, default=50, help="rows to show (default %(default)s)")
    show = command("show", cmd_show, "one episode's whole trace")
    show.add_argument("episode", help="episode uuid or a unique prefix of it")
    show.add_argument("--full", action="store_true", help="print every turn's whole prompt, and long texts whole")
    knowledge = command("knowledge", cmd_knowledge, "knowledge sets and items; with --env, the selected set's text")
    knowledge.add_argument("--env", help="env name as reflect stored it, e.g. math")
    knowledge.add_argument("--kind", choices=KNOWLEDGE_KINDS, help="item kind")
    knowledge.add_argument("--export", type=Path, help="write the env's selected set as a plain-text --context file")
    knowledge.add_argument("--traces", action="store_true", help="with --export: the newest raw-trace set instead")
    reflect_help = "write knowledge from stored episodes; the gate accepts a set only if it beats no knowledge"
    add_reflect_arguments(command("reflect", cmd_reflect, reflect_help))
    runs = command("runs", cmd_runs, "distillation runs")
    runs.add_argument("--status", choices=RUN_STATUSES)
    export = command("export", cmd_export, "write every record as JSONL (schema: experience_store/jsonl.py)")
    export.add_argument("--out", required=True, help="output file, or - for stdout")
    import_ = command("import", cmd_import, "add the records of a JSONL file: all of them or, on a bad line, none")
    import_.add_argument("file", type=Path, help="JSONL file written by export (or by hand, same schema)")
    import_.add_argument(
        "--check-only", action="store_true", help="make every check import makes (file and store), import nothing"
    )
    merge = command("merge", cmd_merge, "add other stores' records, de-duplicated by uuid (idempotent)")
    merge.add_argument("sources", nargs="+", type=Path, help="store files to merge in (opened read-only)")
    command("check", cmd_check, "verify integrity and the store's invariants")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # e.g. `export --out - | head`: the reader left, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (StoreError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
