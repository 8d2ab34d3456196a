"""The report of ``bench.reproduce``: docs/results.md and its figures, from the finished jobs' metrics."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agents.evaluate import PassRate, paired_difference, wilson_interval  # noqa: E402
from bench.jobs import Job, Ledger  # noqa: E402
from bench.reproduce_plan import DEFAULT, GAME_ENVS, OOD, QWEN, QWEN_ENV, QWEN_SMALL, QWEN_TOKENS, Plan  # noqa: E402
from experience_store import ExperienceStore, StoreError  # noqa: E402
from experience_store.knowledge import knowledge_text  # noqa: E402
from experience_store.selection import latest_decision  # noqa: E402

# Two-sided 95% Student-t quantiles by degrees of freedom (the normal 1.96 beyond the table).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_half_width(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean of ``values`` (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    return T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


@dataclass
class Cell:
    """Pass rates of one table cell, one per seed (same tasks each time)."""

    rates: list[dict[str, float]]
    seconds: float = 0.0

    @property
    def same_every_seed(self) -> bool:
        """Greedy decoding of an untrained model (or a single seed so far): one value, a task-level interval."""
        return len({r["successes"] for r in self.rates}) == 1

    def interval(self) -> tuple[float, float]:
        """95% interval in %: Wilson over the tasks when every seed agrees, else a t-interval over seeds."""
        if self.same_every_seed:
            low, high = wilson_interval(int(self.rates[0]["successes"]), int(self.rates[0]["n"]))
            return 100 * low, 100 * high
        mean, half = self.mean or 0.0, t_half_width([100 * r["rate"] for r in self.rates])
        return mean - half, mean + half

    def text(self) -> str:
        if not self.rates:
            return "(not run yet)"
        n, (low, high) = int(self.rates[0]["n"]), self.interval()
        if self.same_every_seed:
            return f"{self.mean:.1f} [{low:.0f}, {high:.0f}] (n={n}, {len(self.rates)} seed{'s' * (len(self.rates) > 1)})"
        return f"{self.mean:.1f} ± {(high - low) / 2:.1f} ({len(self.rates)} seeds × n={n})"

    @property
    def mean(self) -> float | None:
        return statistics.fmean(100 * r["rate"] for r in self.rates) if self.rates else None


def evaluations(run: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(before, after) evaluations of a finished distill.run folder."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if '"eval_detail"' in line]
    details = [r["eval_detail"] for r in records if r.get("split", "test") == "test"]
    return (details[0], details[-1]) if len(details) >= 2 else None


class Results:
    def __init__(self, plan: Plan, done: dict[str, dict[str, Any]]) -> None:
        self.plan, self.done = plan, done

    def runs(self, name: str) -> Iterator[tuple[Job, tuple[dict[str, Any], dict[str, Any]]]]:
        for seed in range(self.plan.s.seeds):
            job = self.plan.jobs.get(f"{name}-seed{seed}")
            # A run's metrics hold its evaluation after training only once it finished.
            if job is not None and job.output and (found := evaluations(job.output)):
                yield job, found

    def cell(self, name: str, when: str, column: str) -> Cell:
        rates, seconds = [], 0.0
        for job, (before, after) in self.runs(name):
            rates.append((before if when == "before" else after)[column])
            seconds += self.done.get(job.name, {}).get("seconds", 0.0)
        return Cell(rates, seconds)

    def change(self, name: str, start: tuple[str, str], end: tuple[str, str]) -> str:
        """The paired change from one evaluation of run ``name`` to another (``(when, column)`` each) on the
        same tasks, seed by seed: the difference, its 95% interval and the exact McNemar p-value."""
        parts = []
        for job, evaluations in self.runs(name):
            first, last = (PassRate.from_dict(evaluations[w == "after"][c]) for w, c in (start, end))
            if not first.outcomes:
                return "— (run predates per-task outcomes)"
            seed = job.name.rsplit("seed", 1)[1]
            parts.append(f"seed {seed}: {paired_difference(first, last)}")
        return "; ".join(parts) if parts else "(not run yet)"

    def command(self, name: str) -> str:
        job = self.plan.jobs.get(f"{name}-seed0")
        seeds = "{" + ",".join(str(seed) for seed in range(self.plan.s.seeds)) + "}"
        return job.command.replace("--seed 0", f"--seed {seeds}").replace("seed0", f"seed{seeds}") if job else ""


def method_table(results: Results, prefix: str, env: str, title: str) -> tuple[list[str], dict[str, Cell]]:
    ood = OOD[env]
    rows = [
        ("Base", results.cell(f"{prefix}-opcd", "before", "student"), results.cell(f"{prefix}-opcd", "before", "ood")),
        ("In-context", results.cell(f"{prefix}-opcd", "before", "student_with_context"), None),
        ("Context distillation (off-policy)", results.cell(f"{prefix}-offpolicy", "after", "student"),
         results.cell(f"{prefix}-offpolicy", "after", "ood")),
        ("OPCD", results.cell(f"{prefix}-opcd", "after", "student"), results.cell(f"{prefix}-opcd", "after", "ood")),
    ]  # fmt: skip
    base = ("before", "student")
    changes = ["", results.change(f"{prefix}-opcd", base, ("before", "student_with_context")),
               results.change(f"{prefix}-offpolicy", base, ("after", "student")),
               results.change(f"{prefix}-opcd", base, ("after", "student"))]  # fmt: skip
    lines = [f"### {title}", "", f"| method | {env} (test) | {ood} (OOD) | {env}: paired change from base |",
             "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {label} | {cell.text()} | {ood_cell.text() if ood_cell else '—'} | {change} |"
              for (label, cell, ood_cell), change in zip(rows, changes)]  # fmt: skip
    seconds = results.cell(f"{prefix}-opcd", "after", "student").seconds + results.cell(f"{prefix}-offpolicy", "after", "student").seconds
    lines += ["", f"Commands: `{results.command(prefix + '-opcd')}`; the off-policy row: `--method offpolicy`. "
              f"Distillation wall time, all seeds: {seconds / 60:.0f} min.", ""]  # fmt: skip
    return lines, {label: cell for label, cell, _ in rows}


def bar_figure(path: Path, title: str, cells: dict[str, Cell]) -> list[str]:
    """Draw the cells that have results as bars; the Markdown lines that show the figure (none if empty)."""
    labels = [k for k, c in cells.items() if c.mean is not None]
    if not labels:
        return []
    means = [cells[k].mean or 0.0 for k in labels]
    intervals = [cells[k].interval() for k in labels]
    errors = [[m - low for m, (low, _) in zip(means, intervals)], [high - m for m, (_, high) in zip(means, intervals)]]
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.2))
    ax.bar(range(len(labels)), means, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), [k.replace(" (", "\n(") for k in labels], fontsize=8)
    ax.set_ylabel("pass rate (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [f"![{title}](results/{path.name})", ""]


def gate_lines(store_path: Path, env: str, model: str) -> list[str]:
    """The gate's decision on the env's knowledge (verdict, rule, scores) and the text the runs distilled."""
    if not store_path.exists():
        return []
    pending = f"The gate has not decided on {env} ({model}) yet: its reflect job has not finished"
    try:
        with ExperienceStore.open(store_path, readonly=True) as store:
            decision = latest_decision(store, env, model=model)
            if decision is None:
                return [f"{pending}.", ""]
            chosen = store.knowledge_set(decision.context_set(force=True))
    except StoreError as err:  # e.g. made by an older version and not yet upgraded by a writer
        return [f"{pending} (the store cannot be read now: {err}).", ""]
    scores = "; ".join(f"{c.label} {100 * c.rate.rate:.0f}% ({c.gain})" for c in decision.candidates)
    which = "accepted" if decision.accepted else "refused by the gate, distilled anyway (`--force-distill`) to fill the table"
    text = knowledge_text(chosen.items)
    return [f"The gate on {env} ({model}, {decision.split} split, n={decision.no_context.n}): **{decision.verdict}**. "
            f"No context {100 * decision.no_context.rate:.0f}%; {scores}. Rule: {decision.rule}.", "",
            f"The distilled context ({chosen.metadata.get('label', chosen.uuid[:12])}; {which}):", "", "```text",
            text[:800] + (" ..." if len(text) > 800 else ""), "```", ""]  # fmt: skip


def qwen_lines(plan: Plan, results: Results, figures: Path) -> list[str]:
    """Tables 7-8: Table 1 on the 1.5B (it measurably uses a worked example on math), and cross-size."""
    env, ood, own, cross = QWEN_ENV, OOD[QWEN_ENV], f"{QWEN_ENV}-qwen-opcd", f"{QWEN_ENV}-cross-opcd"
    rows = [
        (f"{QWEN}: base", results.cell(own, "before", "student"), results.cell(own, "before", "ood"), ""),
        (f"{QWEN}: its own knowledge in context", results.cell(own, "before", "student_with_context"), None,
         results.change(own, ("before", "student"), ("before", "student_with_context"))),
        (f"{QWEN}: OPCD (self-distillation)", results.cell(own, "after", "student"), results.cell(own, "after", "ood"),
         results.change(own, ("before", "student"), ("after", "student"))),
        (f"{QWEN_SMALL}: base", results.cell(cross, "before", "student"), results.cell(cross, "before", "ood"), ""),
        (f"{QWEN_SMALL}: OPCD, {QWEN} extracts and teaches", results.cell(cross, "after", "student"),
         results.cell(cross, "after", "ood"), results.change(cross, ("before", "student"), ("after", "student"))),
    ]  # fmt: skip
    lines = ["## Tables 7-8 (v2): experiential knowledge on a model that can use it, and cross-size", "",
             f"{QWEN} played {plan.s.episodes} math train problems (T=0.7), wrote its own knowledge from all of them "
             "(insights, exemplars, their mix) and the gate scored each against no context on "
             f"{plan.s.validation_tasks} validation problems. OPCD then distils that knowledge into {QWEN} itself "
             f"(Table 7) and, with {QWEN} as the frozen teacher holding it, into {QWEN_SMALL} (Table 8). "
             f"Replies up to {QWEN_TOKENS} tokens; paired changes are against the row's own base, seed by seed.", "",
             f"| model and condition | {env} (test) | {ood} (OOD) | {env}: paired change from base |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {label} | {cell.text()} | {o.text() if o else '—'} | {change} |" for label, cell, o, change in rows]
    seconds = {name: results.cell(name, "after", "student").seconds for name in (own, cross)}
    lines += ["", f"Commands: `{results.command(own)}`; `{results.command(cross)}`. Distillation wall time, all "
              f"seeds: self {seconds[own] / 60:.0f} min, cross-size {seconds[cross] / 60:.0f} min.", ""]  # fmt: skip
    lines += gate_lines(plan.store(QWEN_ENV, QWEN), QWEN_ENV, QWEN)
    lines += bar_figure(figures / "table7-math-qwen.png", f"math (test), {QWEN} and {QWEN_SMALL}",
                        {label: cell for label, cell, _, _ in rows})  # fmt: skip
    return lines


def report(plan: Plan, ledger: Ledger, path: Path, tables: set[int]) -> None:
    done = ledger.done  # read once: other workers may add to it meanwhile
    results = Results(plan, done)
    figures = path.parent / "results"
    figures.mkdir(parents=True, exist_ok=True)
    total = sum(j["seconds"] for j in done.values())
    threads = ", ".join(sorted({str(j.get("omp_num_threads", "not recorded")) for j in done.values()}))
    s = plan.s
    lines = [
        "# Results (v2): the paper's tables at small scale",
        "",
        "The v1 report (default model only, 30 test tasks, no paired tests, knowledge selected without the gate) "
        "is kept in [results-v1.md](results-v1.md).",
        "",
        f"Generated by `python -m bench.reproduce --seeds {s.seeds} --steps {s.steps} --eval-tasks {s.eval_tasks}` "
        f"(last updated {date.today().isoformat()}; {len(done)} of {len(plan.jobs)} jobs finished, "
        f"{total / 3600:.1f} h of job time{' so far' * (len(done) < len(plan.jobs))}, summed over jobs "
        f"that workers ran side by side) on {platform.machine()} {platform.system()}, "
        f"{os.cpu_count()} CPU cores, no GPU, OMP_NUM_THREADS per job: {threads}. "
        "Models: SmolLM2-135M-Instruct (Tables 1-6) and the Qwen2.5-Coder pair (Tables 7-8), fp32, LoRA r=16, "
        f"lr 1e-4, full-vocabulary reverse KL, temperature 0.7, {s.steps} steps of 4 episodes. Evaluation: greedy, the first {s.eval_tasks} distinct tasks of each env's "
        "test split (a split with fewer is evaluated whole). A cell is the pass rate in %: where seeds differ, the mean over seeds ± the half-width of a 95% "
        "t-interval over seeds; where every seed gave the same value (untrained cells under greedy decoding, or "
        "one seed so far), that value with a 95% Wilson interval over the tasks; the figures' error bars are "
        "the same intervals. Base and in-context cells are the start model's evaluation, measured once per env "
        "and context and shared by the runs (`--eval-cache`). The paper's figures (Qwen3/Llama models of "
        "1.7-8B parameters, thousands of test items) are beside ours for the direction of each effect, not the size. "
        "A paired change compares two evaluations on the same tasks, seed by seed: the difference in points with "
        "its 95% interval (Bonett-Price), the exact McNemar p-value, and the tasks gained and lost; an interval "
        "that holds 0 is no measured effect.",
        "",
    ]
    if 1 in tables:
        lines += ["## Tables 1-2: experiential knowledge", "",
                  f"Knowledge: the model played {s.episodes} train episodes (T=0.7) and `experience_store reflect` made "
                  "candidates from all of them (insights from 3 sampling seeds, its successful traces as exemplars, "
                  f"their mix); the gate played {s.validation_tasks} validation tasks with no context and with each. "
                  "The teacher's context is the set the gate accepted or, where it refused them all, the best "
                  "candidate anyway (`--force-distill`; the verdict is printed under each table). Paper (Table 2, filtered knowledge): Qwen3-8B "
                  "math 75.0 base / 79.0 in-context / 79.5 context distillation / 80.9 OPCD; Qwen3-4B Sokoban "
                  "9.4 / 48.4 / 51.6 / 53.9; the OOD (IF-Eval) within ±1 point of base.", ""]  # fmt: skip
        for env in GAME_ENVS:
            table, cells = method_table(results, env, env, f"{env}: base, in-context, off-policy, OPCD")
            lines += table
            lines += bar_figure(figures / f"table1-{env}.png", f"{env} (test)", cells)
            lines += gate_lines(plan.store(env), env, DEFAULT)
    if 3 in tables:
        lines += ["## Tables 3-4: system prompt distillation (QA)", "",
                  "The QA env's shipped system prompt as the context. Paper (Table 3, medical): Llama-3.2-3B 59.4 "
                  "base / 66.4 in-context / 71.0 context distillation / 76.3 OPCD.", ""]  # fmt: skip
        table, cells = method_table(results, "qa-system-prompt", "qa", "QA with its system prompt")
        lines += table
        lines += bar_figure(figures / "table3-qa-system-prompt.png", "QA, system prompt (test)", cells)
        before = results.cell("qa-handbook-opcd", "before", "student")
        open_book = results.cell("qa-handbook-opcd", "before", "student_with_context")
        after = results.cell("qa-handbook-opcd", "after", "student")
        ood_before, ood_after = (results.cell("qa-handbook-opcd", w, "ood") for w in ("before", "after"))
        lines += ["### The QA handbook internalised", "", "| | QA (test) | addition (OOD) |", "|---|---|---|",
                  f"| closed book, before | {before.text()} | {ood_before.text()} |",
                  f"| open book (handbook in context) | {open_book.text()} | — |",
                  f"| closed book, after OPCD | {after.text()} | {ood_after.text()} |", "",
                  "Paired changes on the same test questions: open book against closed book "
                  f"{results.change('qa-handbook-opcd', ('before', 'student'), ('before', 'student_with_context'))}; "
                  "after OPCD against before "
                  f"{results.change('qa-handbook-opcd', ('before', 'student'), ('after', 'student'))}.", "",
                  f"Command: `{results.command('qa-handbook-opcd')}`; {after.seconds / 60:.0f} min.", ""]  # fmt: skip
    if 5 in tables:
        frozen = results.cell("addition-opcd", "after", "student")
        live = results.cell("addition-live-opcd", "after", "student")
        lines += ["## Table 5: frozen teacher against the live student as teacher (addition)", "",
                  "Paper: Sokoban 53.9 (teacher-student) vs 18.8 (self); medical 56.8 vs 50.0.", "",
                  "| teacher | addition (test), after OPCD |", "|---|---|",
                  f"| frozen initial model (default) | {frozen.text()} |",
                  f"| the live student itself (`--teacher-mode live`) | {live.text()} |", "",
                  "Paired changes from the start model: frozen "
                  f"{results.change('addition-opcd', ('before', 'student'), ('after', 'student'))}; live "
                  f"{results.change('addition-live-opcd', ('before', 'student'), ('after', 'student'))}.", "",
                  f"Command: `{results.command('addition-live-opcd')}`; {live.seconds / 60:.0f} min.", ""]  # fmt: skip
    if 6 in tables:
        cells = {
            "Without experience": results.cell("addition-opcd", "before", "student"),
            "Raw traces as context": results.cell("addition-traces-opcd", "before", "student_with_context"),
            "Extracted knowledge as context": results.cell("addition-opcd", "before", "student_with_context"),
            "Raw traces + OPCD": results.cell("addition-traces-opcd", "after", "student"),
            "Extracted knowledge + OPCD": results.cell("addition-opcd", "after", "student"),
        }
        lines += ["## Table 6: raw traces against extracted knowledge (addition)", "",
                  "Paper (Qwen3-8B math): 75.1 without / 70.5 raw traces / 77.4 extracted knowledge / 79.7 knowledge "
                  "+ OPCD.", "", "| condition | addition (test) |", "|---|---|"]  # fmt: skip
        lines += [f"| {label} | {cell.text()} |" for label, cell in cells.items()]
        lines += ["", "Paired changes from without experience: raw traces in context "
                  f"{results.change('addition-traces-opcd', ('before', 'student'), ('before', 'student_with_context'))}; "
                  "extracted knowledge in context "
                  f"{results.change('addition-opcd', ('before', 'student'), ('before', 'student_with_context'))}.", ""]
        lines += ["", f"Command (traces): `{results.command('addition-traces-opcd')}`.", ""]
        lines += bar_figure(figures / "table6-addition.png", "addition: traces vs knowledge", cells)
    if tables & {7, 8}:
        lines += qwen_lines(plan, results, figures)
    lines += ["## Every job", "", "| job | wall time | command |", "|---|---|---|"]
    for name, job in done.items():
        resumed = " (from a checkpoint)" if job.get("resumed") else ""
        lines.append(f"| {name} | {job['seconds'] / 60:.1f} min{resumed} | `{job['command']}` |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
