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
Runs share the start model's evaluation (OUT/eval-cache.json: greedy, so seeds and methods repeat it
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
from bench.jobs import Claims, Job, Ledger, work  # noqa: E402
from experience_store import ExperienceStore  # noqa: E402
from experience_store.knowledge import knowledge_text  # noqa: E402
from experience_store.selection import latest_decision  # noqa: E402

GAME_ENVS = ("addition", "sokoban")  # Tables 1-2: experiential knowledge on math and on a text game
OOD = {"addition": "qa", "sokoban": "qa", "qa": "addition", "math": "qa"}
DEFAULT = "smollm2-135m"
# Tables 7-8 (v2): Table 1 on a model that can use experience, and the paper's cross-size case.
QWEN, QWEN_SMALL, QWEN_ENV, QWEN_TOKENS = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "math", 128
TABLES = {1, 3, 5, 6, 7, 8}


# Two-sided 95% Student-t quantiles by degrees of freedom (the normal 1.96 beyond the table).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_half_width(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean of ``values`` (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    return T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


@dataclass(frozen=True)
class Settings:
    out: Path
    seeds: int
    steps: int
    eval_tasks: int
    episodes: int
    max_new_tokens: int
    validation_tasks: int = 100


class Plan:
    """Every job of the chosen tables, in dependency order (setup jobs once, then one run per seed)."""

    def __init__(self, settings: Settings, tables: set[int]) -> None:
        self.s = settings
        self.jobs: dict[str, Job] = {}
        envs_needed = [e for e in GAME_ENVS if 1 in tables or (e == "addition" and tables & {5, 6})]
        for env in envs_needed:
            self._experience(env)
        if tables & {7, 8}:
            self._experience(QWEN_ENV, QWEN, QWEN_TOKENS, candidates=1, baselines=False)  # ~10 tokens/s on a CPU
        for seed in range(settings.seeds):
            if 7 in tables:
                self.distill(f"{QWEN_ENV}-qwen-opcd", seed, QWEN_ENV, self.gated(QWEN_ENV, QWEN), "opcd",
                             ("--model", QWEN), QWEN_TOKENS)  # fmt: skip
            if 8 in tables:
                self.distill(f"{QWEN_ENV}-cross-opcd", seed, QWEN_ENV, self.gated(QWEN_ENV, QWEN), "opcd",
                             ("--model", QWEN_SMALL, "--teacher", QWEN), QWEN_TOKENS)  # fmt: skip
            if 1 in tables:
                for env in GAME_ENVS:
                    for method in ("opcd", "offpolicy"):
                        self.distill(f"{env}-{method}", seed, env, self.gated(env), method)
            if 3 in tables:
                for method in ("opcd", "offpolicy"):
                    self.distill(f"qa-system-prompt-{method}", seed, "qa", ["--env-context", "system_prompt"], method)
                self.distill("qa-handbook-opcd", seed, "qa", ["--env-context", "handbook"], "opcd")
            if 5 in tables:
                self.distill("addition-opcd", seed, "addition", self.gated("addition"), "opcd")
                self.distill("addition-live-opcd", seed, "addition", self.gated("addition"), "opcd",
                             ("--teacher-mode", "live"))  # fmt: skip
            if 6 in tables:
                self.distill("addition-opcd", seed, "addition", self.gated("addition"), "opcd")
                self.distill(
                    "addition-traces-opcd", seed, "addition",
                    ["--context", str(self.traces("addition")), "--context-kind", "traces"], "opcd",
                )

    def gated(self, env: str, model: str = DEFAULT) -> list[str]:
        """The context of a run on experiential knowledge: what the gate decided in the env's store, its
        best candidate when it accepted none (the report says which), so that every table has its row."""
        return ["--store", str(self.store(env, model)), "--force-distill"]

    def traces(self, env: str) -> Path:
        return self.s.out / f"{env}-traces.txt"

    def store(self, env: str, model: str = DEFAULT) -> Path:
        return self.s.out / (f"{env}.db" if model == DEFAULT else f"{env}-{model}.db")

    def add(self, job: Job) -> None:
        self.jobs.setdefault(job.name, job)

    def _experience(self, env: str, model: str = DEFAULT, max_new_tokens: int | None = None, candidates: int = 3,
                    baselines: bool = True) -> None:  # fmt: skip
        """Collect train episodes; reflect on all of them (insights from ``candidates`` seeds, exemplars, their
        mix; the gate on validation; with ``baselines``, raw traces scored too, and exported)."""
        store, tokens = str(self.store(env, model)), str(max_new_tokens or self.s.max_new_tokens)
        suffix = "" if model == DEFAULT else f"-{model}"
        self.add(Job(f"collect-{env}{suffix}", ("-m", "agents.play", "--env", env, "--model", model,
            "--episodes", str(self.s.episodes), "--temperature", "0.7", "--seed", "0", "--max-new-tokens", tokens,
            "--store", store), self.store(env, model)))  # fmt: skip
        self.add(Job(f"reflect-{env}{suffix}", ("-m", "experience_store", "reflect", "--store", store, "--env", env,
            "--agent-model", model, "--episodes-per-candidate", str(self.s.episodes), "--candidates", str(candidates),
            "--budget", "512", "--validation-tasks", str(self.s.validation_tasks), *(["--baselines"] * baselines),
            "--validation-max-new-tokens", tokens), None))  # fmt: skip
        if baselines:
            self.add(Job(f"export-traces-{env}", ("-m", "experience_store", "knowledge", "--store", store,
                "--env", env, "--traces", "--export", str(self.traces(env))), self.traces(env)))  # fmt: skip

    def distill(
        self, name: str, seed: int, env: str, context: list[str], method: str, extra: tuple[str, ...] = (),
        max_new_tokens: int | None = None,
    ) -> None:
        out = self.s.out / "runs" / f"{name}-seed{seed}"
        tokens = str(max_new_tokens or self.s.max_new_tokens)
        argv = (
            "-m", "distill.run", "--env", env, *context, "--method", method, "--ood-env", OOD[env],
            "--seed", str(seed), "--steps", str(self.s.steps), "--episodes-per-step", "4",
            "--max-new-tokens", tokens, "--eval-every", "0", "--eval-tasks", str(self.s.eval_tasks),
            "--eval-max-new-tokens", tokens, "--save-every", str(max(1, self.s.steps // 4)),
            "--eval-cache", str(self.s.out / "eval-cache.json"), "--out-dir", str(out), *extra,
        )  # fmt: skip
        self.add(Job(f"{name}-seed{seed}", argv, out, resumable=True))


# -- the report -------------------------------------------------------------------------------------


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
    with ExperienceStore.open(store_path, readonly=True) as store:
        decision = latest_decision(store, env, model=model)
        if decision is None:
            return []
        chosen = store.knowledge_set(decision.context_set(force=True))
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
        "# Results: the paper's tables at small scale, on the default model",
        "",
        f"Generated by `python -m bench.reproduce --seeds {s.seeds} --steps {s.steps} --eval-tasks {s.eval_tasks}` "
        f"(last updated {date.today().isoformat()}; {len(done)} of {len(plan.jobs)} jobs finished, "
        f"{total / 3600:.1f} h of job time{' so far' * (len(done) < len(plan.jobs))}, summed over jobs "
        f"that workers ran side by side) on {platform.machine()} {platform.system()}, "
        f"{os.cpu_count()} CPU cores, no GPU, OMP_NUM_THREADS per job: {threads}. "
        "Model: SmolLM2-135M-Instruct (fp32, LoRA r=16, lr 1e-4, full-vocabulary reverse KL, temperature 0.7, "
        f"{s.steps} steps of 4 episodes). Evaluation: greedy, the first {s.eval_tasks} distinct tasks of each env's "
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
                  "Knowledge: the model played 32 train episodes (T=0.7), reflected on them (`experience_store "
                  "reflect`: 3 candidate sets of 4 episodes each, scored in context on 12 validation tasks, the best "
                  "selected) and that set is the teacher's context. Paper (Table 2, filtered knowledge): Qwen3-8B "
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
