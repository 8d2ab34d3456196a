"""The knowledge gate: distil a knowledge set only when it measurably beats no knowledge.

Every candidate set and the empty context are played on the same validation tasks (greedy, each task
once). A candidate passes when its paired gain over no context has a lower confidence bound above 0: the
Bonett-Price interval of ``agents.evaluate``, at level 1 - alpha/k for k candidates (Bonferroni, so
that among k candidates no better than no context, one passes with probability at most alpha). Of those
that pass, the one with the largest gain is accepted; when none passes, "no knowledge beat no context"
and the round distils nothing (unless forced: then the best-scoring candidate).

``decide`` is the rule, a pure function of the scores; ``KnowledgeDecision`` is its record, kept in the
store with the reflect run that made it (``experience_store.selection.latest_decision`` reads it back).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from agents.evaluate import PairedDifference, PassRate, paired_difference, paired_interval


@dataclass(frozen=True)
class GateRule:
    """Accept a candidate when its paired gain over no context has a lower bound above 0 at level
    1 - alpha / k (k candidates: Bonferroni)."""

    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def z(self, candidates: int) -> float:
        """The two-sided normal quantile at level 1 - alpha / candidates."""
        return NormalDist().inv_cdf(1 - self.alpha / (2 * max(1, candidates)))

    def describe(self, candidates: int) -> str:
        level = 100 * (1 - self.alpha / max(1, candidates))
        return (f"accept the largest paired gain over no context whose {level:.4g}% lower bound is above 0 "
                f"(Bonett-Price; 95% family-wise over {candidates} candidate(s), Bonferroni)")  # fmt: skip


@dataclass(frozen=True)
class Scored:
    """One candidate set's validation outcomes, and how it compares with no context on the same tasks."""

    set_id: str
    label: str  # e.g. "insights (seed 0)", "exemplars", "mix"
    rate: PassRate
    gain: PairedDifference
    lower_bound: float  # of the gain, at the rule's adjusted level

    @property
    def passes(self) -> bool:
        return self.lower_bound > 0


def score_against(no_context: PassRate, candidates: Sequence[tuple[str, str, PassRate]], rule: GateRule) -> list[Scored]:
    """Each candidate ``(set_id, label, rate)`` paired with no context, its gain's lower bound at the rule's level."""
    z = rule.z(len(candidates))
    scored = []
    for set_id, label, rate in candidates:
        gain = paired_difference(no_context, rate)
        low, _ = paired_interval(gain.gained, gain.lost, gain.n, z)
        scored.append(Scored(set_id, label, rate, gain, low))
    return scored


def decide(scored: Sequence[Scored]) -> Scored | None:
    """The accepted candidate: of those whose gain's lower bound is above 0, the largest gain (then the
    larger lower bound, then the first); None when none passes."""
    passing = [(i, s) for i, s in enumerate(scored) if s.passes]
    if not passing:
        return None
    return min(passing, key=lambda p: (-p[1].gain.difference, -p[1].lower_bound, p[0]))[1]


def best(scored: Sequence[Scored]) -> Scored:
    """The highest validation score, passing or not (what ``--force-distill`` distils); ties: the first."""
    if not scored:
        raise ValueError("no scored candidate")
    return min(enumerate(scored), key=lambda p: (-p[1].rate.rate, p[0]))[1]


class KnowledgeRefused(ValueError):
    """The gate found no knowledge set better than no context, and distilling was not forced."""


@dataclass(frozen=True)
class KnowledgeDecision:
    """What the gate decided for (env, model, round): the scores it saw, the rule, and the verdict."""

    env: str
    model: str  # the model that played validation (whose knowledge would be distilled)
    round: int
    split: str
    rule: str
    no_context: PassRate
    candidates: tuple[Scored, ...]
    accepted: str | None  # the accepted set's id; None: no knowledge beat no context
    reflect_run: str = ""

    @classmethod
    def make(cls, env: str, model: str, round: int, split: str, no_context: PassRate,
             candidates: Sequence[tuple[str, str, PassRate]], rule: GateRule = GateRule(),
             reflect_run: str = "") -> KnowledgeDecision:  # fmt: skip
        """Score ``candidates`` against ``no_context`` and decide (``decide``)."""
        scored = score_against(no_context, candidates, rule)
        chosen = decide(scored)
        return cls(env, model, round, split, rule.describe(len(scored)), no_context, tuple(scored),
                   chosen.set_id if chosen else None, reflect_run)  # fmt: skip

    @property
    def verdict(self) -> str:
        """One line: what was accepted and why, or that no knowledge beat no context."""
        n = self.no_context.n
        if self.accepted is None:
            top = best(self.candidates) if self.candidates else None
            detail = f"; best was {top.label}: {top.gain} on {n} {self.split} tasks" if top else ""
            return f"no knowledge beat no context{detail}"
        chosen = next((s for s in self.candidates if s.set_id == self.accepted), None)
        if chosen is None:  # test-time mode: chosen without scores
            return f"accepted {self.accepted[:12]} unscored ({self.rule})"
        return f"accepted {chosen.label} ({chosen.set_id[:12]}): {chosen.gain} over no context on {n} {self.split} tasks"

    def context_set(self, *, force: bool = False) -> str:
        """The set to distil: the accepted one; with ``force``, the best-scoring one when none was accepted.

        ``KnowledgeRefused`` (with the verdict) when none was accepted and ``force`` is off.
        """
        if self.accepted is not None:
            return self.accepted
        if force and self.candidates:
            return best(self.candidates).set_id
        raise KnowledgeRefused(
            f"round {self.round} of {self.env} ({self.model}): {self.verdict}; distilling it would teach a "
            "context that did not help (pass --force-distill to distil the best candidate anyway)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "env": self.env, "model": self.model, "round": self.round, "split": self.split, "rule": self.rule,
            "no_context": self.no_context.as_dict(), "accepted": self.accepted, "reflect_run": self.reflect_run,
            "verdict": self.verdict,
            "candidates": [
                {"set": s.set_id, "label": s.label, "rate": s.rate.as_dict(), "lower_bound": s.lower_bound,
                 "gain": s.gain.difference, "interval": list(s.gain.interval), "p": s.gain.p_value}
                for s in self.candidates
            ],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> KnowledgeDecision:
        no_context = PassRate.from_dict(record["no_context"])
        scored = []
        for c in record["candidates"]:
            rate = PassRate.from_dict(c["rate"])
            scored.append(Scored(c["set"], c["label"], rate, paired_difference(no_context, rate), float(c["lower_bound"])))
        return cls(record["env"], record["model"], int(record["round"]), record["split"], record["rule"], no_context,
                   tuple(scored), record["accepted"], record.get("reflect_run", ""))  # fmt: skip
