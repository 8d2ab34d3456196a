"""The plan of ``bench.reproduce``: every job (a CLI command) of the chosen tables, in dependency order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.jobs import Job

GAME_ENVS = ("addition", "sokoban")  # Tables 1-2: experiential knowledge on math and on a text game
OOD = {"addition": "qa", "sokoban": "qa", "qa": "addition", "math": "qa"}
DEFAULT = "smollm2-135m"
# Tables 7-8 (v2): Table 1 on a model that can use experience, and the paper's cross-size case.
QWEN, QWEN_SMALL, QWEN_ENV, QWEN_TOKENS = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "math", 128
TABLES = {1, 3, 5, 6, 7, 8}


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
            "--eval-cache", str(self.s.out / "eval-cache.jsonl"), "--out-dir", str(out), *extra,
        )  # fmt: skip
        self.add(Job(f"{name}-seed{seed}", argv, out, resumable=True))
