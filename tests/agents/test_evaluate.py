"""Evaluation statistics: distinct tasks only, paired differences with their interval and McNemar's test,
and splits large enough to resolve a 10-point difference."""

from __future__ import annotations

import math

import numpy as np
import pytest

import envs
from agents.evaluate import (
    PassRate,
    evaluation_tasks,
    mcnemar_exact_p,
    paired_difference,
    paired_interval,
)
from envs.math_env import FAMILIES, LEVELS, procedural_pool


def brute_force_mcnemar(gained: int, lost: int) -> float:
    """Two-sided exact test: the probability, under Binomial(gained + lost, 1/2), of every outcome no
    more likely than the one observed."""
    n = gained + lost
    probability = [math.comb(n, k) / 2**n for k in range(n + 1)]
    return min(1.0, sum(p for p in probability if p <= probability[gained] * (1 + 1e-12)))


@pytest.mark.parametrize("gained, lost", [(0, 0), (3, 0), (0, 7), (5, 4), (12, 3), (1, 20), (40, 25)])
def test_mcnemar_exact_p_matches_enumeration(gained: int, lost: int) -> None:
    assert mcnemar_exact_p(gained, lost) == pytest.approx(brute_force_mcnemar(gained, lost), rel=1e-9)


@pytest.mark.parametrize("p_before, p_after, correlation_share", [(0.3, 0.3, 0.8), (0.2, 0.35, 0.5), (0.5, 0.6, 0.9), (0.05, 0.1, 0.3)])
def test_paired_interval_covers_the_true_difference(p_before: float, p_after: float, correlation_share: float) -> None:
    """Simulated paired outcomes (n=60): the 95% interval holds the true difference in >= 93% of draws."""
    rng = np.random.default_rng(0)
    n, draws = 60, 4000
    # Cell probabilities of (before, after): a share of tasks has the same outcome both times.
    both = correlation_share * min(p_before, p_after)
    cells = np.array([both, p_before - both, p_after - both, 1 - p_before - p_after + both])  # 11, 10, 01, 00
    counts = rng.multinomial(n, cells, size=draws)
    covered = 0
    for _, lost, gained, _ in counts:
        low, high = paired_interval(int(gained), int(lost), n)
        covered += low <= p_after - p_before <= high
    assert covered / draws >= 0.93


def test_paired_interval_keeps_a_width_when_no_task_changed() -> None:
    low, high = paired_interval(0, 0, 100)
    assert low < 0 < high and high - low > 0.03
    assert paired_interval(30, 0, 30)[1] <= 1.0 and paired_interval(0, 30, 30)[0] >= -1.0


def test_paired_difference_counts_tasks_by_id() -> None:
    before = PassRate(2, 4, {"a": True, "b": True, "c": False, "d": False})
    after = PassRate(3, 4, {"a": True, "b": False, "c": True, "d": True})
    change = paired_difference(before, after)
    assert (change.both, change.gained, change.lost, change.neither) == (1, 2, 1, 0)
    assert change.difference == pytest.approx(0.25) and change.p_value == 1.0 and not change.significant
    assert str(change) == "+25.0 [-55.2, +88.5] p=1" and change.counts == "+2/-1 of 4"
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference(before, PassRate(1, 1, {"a": True}))
    with pytest.raises(ValueError, match="no per-task outcomes"):
        paired_difference(PassRate(1, 2), PassRate(1, 2))
    assert PassRate.from_dict(after.as_dict()).outcomes == after.outcomes


def test_evaluation_never_repeats_a_task() -> None:
    """FrozenLake's test split holds 4 maps: asking for 40 gives those 4 once each, not 10 times."""
    tasks = evaluation_tasks("frozenlake", "test", 40)
    assert len(tasks) == len(set(tasks)) == envs.make("frozenlake").split_sizes["test"] == 4
    assert len(evaluation_tasks("addition", "validation", 20)) == 20


def test_splits_resolve_a_ten_point_difference() -> None:
    addition = envs.make("addition").split_sizes
    assert addition["test"] >= 500 and addition["validation"] >= 200
    assert envs.make("qa").split_sizes["test"] >= 300
    test = procedural_pool(FAMILIES, LEVELS)["test"]
    for family in FAMILIES:
        for level in LEVELS:
            assert sum(t.family == family and t.level == level for t in test) >= 100, (family, level)
