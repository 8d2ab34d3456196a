"""Pass rates with confidence intervals, and paired comparisons of two evaluations on the same tasks.

An evaluation plays each task of a split at most once: asking for more tasks than the split holds gives
the whole split (n is always the number of distinct tasks). Two evaluations of the same tasks (before
and after training, a method against the base model, with and without a context) are compared task by
task: the paired difference with a 95% interval (Bonett-Price) and the exact McNemar p-value, which count
only the tasks whose outcome changed. Unpaired intervals on the two rates would be far too wide for
this (they ignore that the same tasks were played), and repeats of a task would make them too narrow.

``evaluate`` measures one ``Evaluation`` (a model on the tasks of an env's split, with or without a
context); an ``EvalCache`` keeps measured pass rates, with every task's outcome, keyed per evaluation, for
commands that would otherwise repeat them (``distill`` runs sharing a start model, ``bench.context_gap``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import envs
from agents.agent import Agent, Context
from agents.llm import LLM, SamplingParams
from agents.records import Episode
from agents.rollout import RolloutStats, Task, collect_episodes
from common.files import locked, write_text_atomic

log = logging.getLogger(__name__)
_capped: set[tuple[str, str, int]] = set()  # (env, split, asked) already reported as capped


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PassRate:
    """Successes out of n distinct tasks, with a 95% Wilson interval and each task's outcome by task id."""

    successes: int
    n: int
    outcomes: Mapping[str, bool] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> PassRate:
        """The inverse of ``as_dict`` (records written before outcomes were kept have none)."""
        outcomes = {str(k): bool(v) for k, v in record.get("outcomes", {}).items()}
        return cls(int(record["successes"]), int(record["n"]), outcomes)

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{100 * self.rate:.1f}% [{100 * low:.0f}, {100 * high:.0f}] (n={self.n})"

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {"rate": self.rate, "low": low, "high": high, "successes": self.successes, "n": self.n,
                "outcomes": {k: int(v) for k, v in self.outcomes.items()}}  # fmt: skip


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of ``gained`` vs ``lost`` discordant tasks at 1/2."""
    discordant = gained + lost
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(gained, lost) + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def paired_interval(gained: int, lost: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval for p_after - p_before of n paired binary outcomes (Bonett and Price 2012).

    ``gained``: tasks failed before and passed after; ``lost``: the reverse. A Wald interval on the
    discordant proportions, each with one success and one failure added (n + 2), one of the intervals
    recommended by Fagerland, Lydersen and Laake (2014): it keeps a width when no task changed (where
    Newcombe's hybrid interval can collapse to a point) and stays inside [-1, 1].
    """
    if n == 0:
        return -1.0, 1.0
    up, down = (gained + 1) / (n + 2), (lost + 1) / (n + 2)
    centre = up - down
    half = z * math.sqrt(max(0.0, (up + down - centre**2) / (n + 2)))
    return max(-1.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedDifference:
    """``after`` minus ``before`` on the same n tasks: the difference, its 95% interval, McNemar's p."""

    n: int
    both: int
    gained: int
    lost: int
    neither: int

    @property
    def difference(self) -> float:
        return (self.gained - self.lost) / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return paired_interval(self.gained, self.lost, self.n)

    @property
    def p_value(self) -> float:
        return mcnemar_exact_p(self.gained, self.lost)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (the p-value is then small too; "no measured effect" otherwise)."""
        low, high = self.interval
        return low > 0 or high < 0

    def __str__(self) -> str:
        """``+6.7 [+1.2, +12.1] p=0.031``: points, the 95% interval, the exact McNemar p-value."""
        low, high = self.interval
        return f"{100 * self.difference:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] p={self.p_value:.2g}"

    @property
    def counts(self) -> str:
        """Tasks gained and lost of n: ``+4/-1 of 30``."""
        return f"+{self.gained}/-{self.lost} of {self.n}"


def paired_difference(before: PassRate, after: PassRate) -> PairedDifference:
    """Compare two evaluations task by task; they must hold outcomes for exactly the same tasks."""
    if not before.outcomes or before.outcomes.keys() != after.outcomes.keys():
        only = sorted(set(before.outcomes) ^ set(after.outcomes))[:3]
        raise ValueError(
            "a paired comparison needs both evaluations' outcomes on the same tasks"
            + (f" (tasks in one only: {', '.join(only)})" if only else " (no per-task outcomes recorded)")
        )
    counts = {(True, True): 0, (False, True): 0, (True, False): 0, (False, False): 0}
    for task, passed in before.outcomes.items():
        counts[(passed, after.outcomes[task])] += 1
    return PairedDifference(len(before.outcomes), counts[(True, True)], counts[(False, True)],
                            counts[(True, False)], counts[(False, False)])  # fmt: skip


def evaluation_tasks(env_name: str, split: str, num_tasks: int) -> list[Task]:
    """The first ``num_tasks`` tasks of ``split``, each once: all of them when the split holds fewer."""
    size = envs.make(env_name).split_sizes[split]
    if num_tasks > size and (env_name, split, num_tasks) not in _capped:
        _capped.add((env_name, split, num_tasks))
        log.warning("%s %s holds %d distinct tasks: evaluating all %d (not %d)", env_name, split, size, size, num_tasks)
    return [Task(split, i) for i in range(min(num_tasks, size))]


def pass_rate(
    agent: Agent,
    env_name: str,
    split: str = "validation",
    num_tasks: int = 50,
    *,
    batch_size: int = 8,
    on_episode: Callable[[Episode], None] | None = None,
    stats: RolloutStats | None = None,
) -> PassRate:
    """Play the first ``num_tasks`` tasks of ``split`` once each (at most the whole split); count successes."""
    outcomes: dict[str, bool] = {}
    episodes = collect_episodes(
        lambda: envs.make(env_name),
        agent,
        evaluation_tasks(env_name, split, num_tasks),
        env_id=env_name,
        batch_size=batch_size,
        stats=stats,
    )
    for episode in episodes:
        if episode.task_id in outcomes:
            raise ValueError(f"{env_name} {split}: two tasks share the task id {episode.task_id!r}")
        outcomes[episode.task_id] = bool(episode.success)
        if on_episode:
            on_episode(episode)
    return PassRate(sum(outcomes.values()), len(outcomes), outcomes)


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation measures: the first ``tasks`` tasks of ``env``'s ``split``, with ``context`` or none."""

    env: str
    split: str
    tasks: int
    context: Context | None = None


def evaluate(
    llm: LLM,
    sampling: SamplingParams,
    evaluation: Evaluation,
    *,
    max_prompt_tokens: int = 2048,
    batch_size: int = 8,
    on_episode: Callable[[Episode], None] | None = None,
) -> PassRate:
    """``llm``'s pass rate on ``evaluation``, with each task's outcome."""
    agent = Agent(llm, sampling, evaluation.context, max_prompt_tokens)
    return pass_rate(agent, evaluation.env, evaluation.split, evaluation.tasks,
                     batch_size=batch_size, on_episode=on_episode)  # fmt: skip


class EvalCache:
    """Measured pass rates in a JSONL file, one line per evaluation: ``{"key", **PassRate.as_dict(), "seconds"}``.

    The caller's key names everything the evaluation depends on (model, env, split, tasks, context,
    decoding). Reads and writes hold a lock beside the file, so processes in parallel may share it; a
    key measured twice meanwhile keeps the later result. Delete the file (or its lines) after changing
    how prompts are built or scored.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = self.path.with_name(self.path.name + ".lock")

    def get(self, key: str) -> PassRate | None:
        with locked(self.lock):
            record = self._read().get(key)
        return PassRate.from_dict(record) if record is not None else None

    def seconds(self, key: str) -> float:
        """How long measuring ``key``'s stored result took (0 when it is not stored)."""
        with locked(self.lock):
            return float(self._read().get(key, {}).get("seconds", 0.0))

    def put(self, key: str, rate: PassRate, seconds: float) -> None:
        with locked(self.lock):
            records = {**self._read(), key: {"key": key, **rate.as_dict(), "seconds": round(seconds, 1)}}
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in records.values()))

    def lookup(self, key: str, measure: Callable[[], PassRate]) -> tuple[PassRate, bool]:
        """The pass rate stored under ``key``, else ``measure()``'s, timed and stored; and whether it was stored."""
        found = self.get(key)
        if found is not None:
            return found, True
        start = time.perf_counter()
        rate = measure()
        self.put(key, rate, time.perf_counter() - start)
        return rate, False

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        records: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
                PassRate.from_dict(record)
                float(record["seconds"])
                records[str(record["key"])] = record
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(
                    f"{self.path}:{number}: not an evaluation result ({error}); fix or delete the line"
                    " (a cache written before evaluations were cached one per line: delete the file)"
                ) from None
        return records
