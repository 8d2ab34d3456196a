"""bench.reproduce: the job plan, and the report built from finished runs' metrics (no training here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.jobs import Claims, Job, Ledger, run_job, work
from bench.reproduce_plan import QWEN, QWEN_SMALL, TABLES, Plan, Settings
from bench.reproduce_report import report


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
    assert names[:3] == ["collect-addition", "reflect-addition", "export-traces-addition"]
    assert "--episodes-per-candidate 4 --candidates 3" in plan.jobs["reflect-addition"].command
    assert "--store " in plan.jobs["addition-opcd-seed0"].command and "--force-distill" in plan.jobs["addition-opcd-seed0"].command
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
    assert "OMP_NUM_THREADS per job: " in text and "--seed {0,1,2}" in text and (tmp_path / "docs" / "results" / "table1-addition.png").stat().st_size > 0


def test_run_job_starts_a_half_made_output_over_records_it_and_skips_it_next_time(tmp_path: Path) -> None:
    out = tmp_path / "made.txt"
    out.write_text("half")
    job = Job("make", ("-c", f"import pathlib; p = pathlib.Path({str(out)!r}); assert not p.exists(); p.write_text('ok')"), out)
    ledger, lines = Ledger(tmp_path / "jobs.json"), []
    assert run_job(job, ledger, lines.append) and out.read_text() == "ok"
    assert Ledger(tmp_path / "jobs.json").done["make"]["command"].startswith("python -c")
    out.unlink()
    assert run_job(job, ledger, lines.append) and not out.exists()  # finished before: not run again
    assert not Ledger(tmp_path / "jobs.json").done["make"]["resumed"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}")
    (run / "latest").write_text("step-000005")  # an earlier attempt's checkpoint
    resumed = Job("run", ("-c", "import sys; assert sys.argv[1:] == ['--resume']"), run, resumable=True)
    assert run_job(resumed, ledger, lines.append) and Ledger(tmp_path / "jobs.json").done["run"]["resumed"]
    failing = Job("fail", ("-c", "raise SystemExit('no model')"), None)
    assert not run_job(failing, ledger, lines.append) and "no model" in lines[-1] and "fail" not in ledger.done


def test_workers_share_a_plan_through_claims(tmp_path: Path) -> None:
    plan = Plan(Settings(tmp_path, seeds=1, steps=4, eval_tasks=5, episodes=4, max_new_tokens=8), {3})
    assert "--eval-cache" in plan.jobs["qa-handbook-opcd-seed0"].command and "--save-every 1" in plan.jobs["qa-handbook-opcd-seed0"].command
    made = tmp_path / "made"
    plan.jobs = {  # stand-ins for the runs: each writes its name
        name: Job(name, ("-c", f"open({str(made)!r}, 'a').write({name!r} + '\\n')"), tmp_path / name, resumable=True)
        for name in plan.jobs
    }
    claims, ledger = Claims(tmp_path / "claims"), Ledger(tmp_path / "jobs.json")
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (claims.folder / "qa-system-prompt-offpolicy-seed0").write_text(str(busy.pid))  # another live worker's run
        (claims.folder / "qa-handbook-opcd-seed0").write_text("999999999")  # a dead worker's claim: taken over
        work(plan.jobs.values(), ledger, claims, lambda line: None, lambda: None)
        assert made.read_text().split() == ["qa-system-prompt-opcd-seed0", "qa-handbook-opcd-seed0"]
        assert set(ledger.done) == {"qa-system-prompt-opcd-seed0", "qa-handbook-opcd-seed0"}
        assert [p.name for p in claims.folder.iterdir() if not p.name.startswith(".")] == ["qa-system-prompt-offpolicy-seed0"]
        assert not claims.take("qa-system-prompt-offpolicy-seed0")
    finally:
        busy.kill()
        busy.wait()
    assert claims.take("qa-system-prompt-offpolicy-seed0")  # its worker is gone


def test_tables_7_and_8_run_the_larger_models_on_their_own_knowledge(tmp_path: Path) -> None:
    plan = Plan(Settings(tmp_path, seeds=1, steps=3, eval_tasks=10, episodes=4, max_new_tokens=8), {7, 8})
    assert list(plan.jobs)[:2] == [f"collect-math-{QWEN}", f"reflect-math-{QWEN}"]
    assert f"--agent-model {QWEN}" in plan.jobs[f"reflect-math-{QWEN}"].command
    own, cross = plan.jobs["math-qwen-opcd-seed0"].command, plan.jobs["math-cross-opcd-seed0"].command
    assert f"--model {QWEN}" in own and "--max-new-tokens 128" in own and "--ood-env qa" in own
    assert f"--model {QWEN_SMALL} --teacher {QWEN}" in cross and str(plan.store("math", QWEN)) in cross
    ledger = Ledger(tmp_path / "jobs.json")
    job = plan.jobs["math-qwen-opcd-seed0"]
    fake_run(job.output, {"student": 3, "student_with_context": 8, "ood": 2}, {"student": 6, "student_with_context": 8, "ood": 2})
    ledger.record(job, 600.0)
    out = tmp_path / "results.md"
    report(Plan(plan.s, TABLES), ledger, out, TABLES)
    text = out.read_text()
    assert "## Tables 7-8 (v2)" in text and f"| {QWEN}: OPCD (self-distillation) | 60.0 [31, 83] (n=10, 1 seed) |" in text
    assert f"| {QWEN_SMALL}: OPCD, {QWEN} extracts and teaches | (not run yet) |" in text
