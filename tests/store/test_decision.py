"""The knowledge gate's rule: a set is accepted only when its paired gain over no context is measured."""

from __future__ import annotations

import pytest

from agents.evaluate import PassRate
from experience_store.decision import GateRule, KnowledgeDecision, KnowledgeRefused, best, decide, score_against


def outcomes(passed: set[int], n: int = 100) -> PassRate:
    """Outcomes on tasks 0..n-1: the tasks in ``passed`` succeed."""
    return PassRate(len(passed), n, {f"t{i}": i in passed for i in range(n)})


NO_CONTEXT = outcomes(set(range(30)))  # 30 of 100


def changed(gained: int, lost: int) -> PassRate:
    """No context's outcomes with ``gained`` failed tasks passed and ``lost`` passed tasks failed."""
    return outcomes(set(range(lost, 30)) | set(range(30, 30 + gained)))


def verdict(*candidates: PassRate, rule: GateRule = GateRule()) -> str | None:
    scored = score_against(NO_CONTEXT, [(f"set{i}", f"candidate {i}", c) for i, c in enumerate(candidates)], rule)
    chosen = decide(scored)
    return chosen.set_id if chosen else None


def test_a_set_worse_than_no_context_is_refused() -> None:
    assert verdict(changed(gained=2, lost=15)) is None


def test_a_set_better_by_a_clear_paired_margin_is_accepted() -> None:
    assert verdict(changed(gained=20, lost=2)) == "set0"


def test_a_gain_inside_its_interval_is_refused() -> None:
    assert verdict(changed(gained=6, lost=3)) is None  # +3 points: no measured effect
    assert verdict(changed(gained=0, lost=0)) is None  # identical outcomes


def test_more_candidates_need_a_larger_margin() -> None:
    margin = changed(gained=9, lost=1)  # passes alone (lower bound +1.4 points at 95%)
    assert verdict(margin) == "set0"
    assert verdict(margin, *[changed(0, 0)] * 4) is None  # Bonferroni over 5: the bound falls below 0


def test_of_the_sets_that_pass_the_largest_gain_is_accepted() -> None:
    assert verdict(changed(gained=25, lost=5), changed(gained=30, lost=2), changed(gained=1, lost=20)) == "set1"


def test_the_rule_is_stated_and_the_decision_survives_a_round_trip() -> None:
    candidates = [("a", "insights (seed 0)", changed(2, 10)), ("b", "exemplars", changed(25, 3))]
    decision = KnowledgeDecision.make("addition", "smollm2-135m", 1, "validation", NO_CONTEXT, candidates, reflect_run="r")
    assert decision.accepted == "b" and decision.verdict.startswith("accepted exemplars (b): +22.0 [")
    assert "97.5% lower bound" in decision.rule and "2 candidate(s)" in decision.rule
    again = KnowledgeDecision.from_dict(decision.as_dict())
    assert again == decision and again.context_set() == "b"


def test_a_refused_decision_names_the_best_and_distils_it_only_when_forced() -> None:
    candidates = [("a", "insights (seed 0)", changed(2, 10)), ("b", "exemplars", changed(5, 4))]
    decision = KnowledgeDecision.make("addition", "m", 2, "validation", NO_CONTEXT, candidates)
    assert decision.accepted is None
    assert decision.verdict.startswith("no knowledge beat no context; best was exemplars: +1.0 [")
    with pytest.raises(KnowledgeRefused, match="round 2 of addition .*--force-distill"):
        decision.context_set()
    assert decision.context_set(force=True) == "b" == best(decision.candidates).set_id


def test_scores_must_be_on_the_same_tasks() -> None:
    with pytest.raises(ValueError, match="same tasks"):
        score_against(NO_CONTEXT, [("a", "a", outcomes({1}, n=50))], GateRule())
    with pytest.raises(ValueError, match="alpha"):
        GateRule(alpha=0)
