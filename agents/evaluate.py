"""Pass rates with confidence intervals: how well an agent does on a split of an env's tasks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import envs
from agents.agent import Agent
from agents.records import Episode
from agents.rollout import RolloutStats, Task, collect_episodes


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
    """Successes out of n episodes, with a 95% Wilson interval."""

    successes: int
    n: int

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{100 * self.rate:.1f}% [{100 * low:.0f}, {100 * high:.0f}] (n={self.n})"

    def as_dict(self) -> dict[str, float]:
        low, high = self.interval
        return {"rate": self.rate, "low": low, "high": high, "successes": self.successes, "n": self.n}


def evaluation_tasks(env_name: str, split: str, num_tasks: int) -> list[Task]:
    """The first ``num_tasks`` tasks of ``split`` (cycling through a split smaller than that)."""
    size = envs.make(env_name).split_sizes[split]
    return [Task(split, i % size) for i in range(num_tasks)]


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
    """Play the first ``num_tasks`` tasks of ``split`` once each; count successes."""
    successes = n = 0
    episodes = collect_episodes(
        lambda: envs.make(env_name),
        agent,
        evaluation_tasks(env_name, split, num_tasks),
        env_id=env_name,
        batch_size=batch_size,
        stats=stats,
    )
    for episode in episodes:
        successes, n = successes + episode.success, n + 1
        if on_episode:
            on_episode(episode)
    return PassRate(successes, n)
