"""bench.reproduce: the job plan, and the report built from finished runs' metrics (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.reproduce import Job, Ledger, Plan, Settings, report, run_job


def fake_run(job_output: Path, before: dict[str, int], after: dict[str, int], n: int = 10) -> None:
    """A distill.run folder's metrics.jsonl with its first and last evaluations."""
    job_output.mkdir(parents=True)
    def detail(successes: dict[str, int]) -> dict[str, dict[str, float]]:
        return {k: {"rate": v / n, "successes": v, "n": n} for k, v in successes.items()}
    lines = [{"step": 0, "eval_detail": detail(before)}, {"step": 1, "train/loss": 0.1}, {"step": 2, "eval_detail": detail(after)}]
    (job_output / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))


def test_plan_orders_setup_before_runs_and_shares_runs_between_tables(tmp_path: Path) -> None:
    plan = Plan(Settings(tmp_path, seeds=2, steps=3, eval_tasks=5, episodes=4, max_new_tokens=8), {1, 5, 6})
    names = list(plan.jobs)
    assert names[:4] == ["collect-addition", "reflect-addition", "export-addition", "export-traces-addition"]
    assert names.count("addition-opcd-seed0") == 1  # Tables 1, 5 and 6 read the same run
    run = plan.jobs["addition-live-opcd-seed1"]
    assert run.resumable and "--teacher-mode live" in run.command and "--seed 1" in run.command
    assert "--context-kind traces" in plan.jobs["addition-traces-opcd-seed0"].command


def test_report_aggregates_seeds_and_marks_missing_cells(tmp_path: Path) -> None:
    plan = Plan(Settings(tmp_path, seeds=3, steps=3, eval_tasks=10, episodes=4, max_new_tokens=8), {1, 5, 6})
    ledger = Ledger(tmp_path / "jobs.json")
    for seed, after in enumerate((5, 6, 7)):
        job = plan.jobs[f"addition-opcd-seed{seed}"]
        fake_run(job.output, {"student": 3, "student_with_context": 4, "ood": 2}, {"student": after, "student_with_context": 6, "ood": 2})
        ledger.record(job, 60.0)
    out = tmp_path / "docs" / "results.md"
    report(plan, ledger, out, {1, 5, 6})
    text = out.read_text()
    assert "| OPCD | 60.0 ± 24.8 (3 seeds × n=10) | 20.0 [6, 51] (n=10, 3 seeds) |" in text  # 50/60/70 %, t(2)
    assert "| Base | 30.0 [11, 60] (n=10, 3 seeds) |" in text  # greedy, untrained: one Wilson interval
    assert "(not run yet)" in text  # off-policy, Sokoban, the live teacher and traces have not run
    assert "--seed {0,1,2}" in text and (tmp_path / "docs" / "results" / "table1-addition.png").stat().st_size > 0


def test_run_job_starts_a_half_made_output_over_records_it_and_skips_it_next_time(tmp_path: Path) -> None:
    out = tmp_path / "made.txt"
    out.write_text("half")
    job = Job("make", ("-c", f"import pathlib; p = pathlib.Path({str(out)!r}); assert not p.exists(); p.write_text('ok')"), out)
    ledger, lines = Ledger(tmp_path / "jobs.json"), []
    assert run_job(job, ledger, lines.append) and out.read_text() == "ok"
    assert Ledger(tmp_path / "jobs.json").done["make"]["command"].startswith("python -c")
    out.unlink()
    assert run_job(job, ledger, lines.append) and not out.exists()  # finished before: not run again
    failing = Job("fail", ("-c", "raise SystemExit('no model')"), None)
    assert not run_job(failing, ledger, lines.append) and "no model" in lines[-1] and "fail" not in ledger.done
