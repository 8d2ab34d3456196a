"""Small-scale analogues of the OPCD paper's tables on the default model: writes docs/results.md and its figures.

    python -m bench.reproduce                            # everything: hours on a 2-core CPU; rerun to resume
    python -m bench.reproduce --tables 1 6 --seeds 3     # some tables
    python -m bench.reproduce --report                   # only rewrite docs/results.md from finished jobs
    python -m bench.reproduce --plan                     # print every command, run nothing
    python -m bench.reproduce &                          # a second worker beside the first (one per core)

Every job is a command of this project's CLIs (play, reflect, knowledge export, distill.run), run as a
subprocess. A finished job is recorded in OUT/jobs.json with its command and wall time, and is skipped by
a rerun; an interrupted distillation continues from its last checkpoint (``--resume``), an interrupted
collection starts over in a fresh store. Workers share a plan: each claims a job (OUT/claims/) before
running it, skips runs that another live worker holds and waits for setup jobs that later ones need.
Runs share the start model's evaluation (OUT/eval-cache.jsonl: greedy, so seeds and methods repeat it
exactly). The report is rewritten after every job, so docs/results.md always shows what has finished
(cells still missing say so).

Tables (the paper's numbering; ours are analogues at ~1/60 of the smallest model the paper used):
1-2. experiential knowledge (collect, reflect, select on validation) on ``addition`` and on Sokoban:
     base / in-context / off-policy context distillation / OPCD, test split plus QA as the OOD env;
3-4. system prompt distillation on QA (its shipped system prompt), and the QA handbook internalised
     (closed-book accuracy before and after);
5.   frozen teacher against the live student as its own teacher (addition);
6.   raw traces against extracted knowledge as the context (addition).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.jobs import Claims, Ledger, work
from bench.reproduce_plan import QWEN, QWEN_SMALL, TABLES, Plan, Settings
from bench.reproduce_report import report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", type=int, default=sorted(TABLES), choices=sorted(TABLES),
                        help="1: Tables 1-2, 3: Tables 3-4 and the handbook, 5: Table 5, 6: Table 6, 7: Table 1 on "
                        f"{QWEN}, 8: cross-size ({QWEN} teaches {QWEN_SMALL}); the report covers every table")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="OPCD steps per run")
    parser.add_argument("--eval-tasks", type=int, default=200, help="distinct test tasks per evaluation")
    parser.add_argument("--episodes", type=int, default=32, help="train episodes collected for reflect")
    parser.add_argument("--validation-tasks", type=int, default=100, help="validation tasks the gate plays per candidate")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--write", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--report", action="store_true", help="only rewrite the report from finished jobs")
    parser.add_argument("--plan", action="store_true", help="print every job's command and exit")
    args = parser.parse_args(argv)
    settings = Settings(args.out, args.seeds, args.steps, args.eval_tasks, args.episodes, args.max_new_tokens,
                        args.validation_tasks)
    tables = set(args.tables)
    plan, everything = Plan(settings, tables), Plan(settings, TABLES)  # this worker's jobs; the report's
    if args.plan:
        for job in plan.jobs.values():
            print(f"{job.name}: {job.command}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(args.out / "jobs.json")
    if not args.report:
        with (args.out / "reproduce.log").open("a", encoding="utf-8") as log_file:
            def log(line: str) -> None:
                print(line, flush=True)
                log_file.write(line + "\n")
                log_file.flush()

            work(plan.jobs.values(), ledger, Claims(args.out / "claims"), log,
                 lambda: report(everything, ledger, args.write, TABLES))
    report(everything, ledger, args.write, TABLES)
    print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
