"""Selection: candidates per seed and accumulation step, scored by a scripted scorer, the best selected."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.evaluate import PassRate
from agents.hf_backend import HFBackend
from agents.llm import Generation, SamplingParams
from agents.records import Episode, Message, Turn
from experience_store import ExperienceStore
from experience_store.knowledge import knowledge_text, trace_text
from experience_store.reflect import Extractor
from experience_store.selection import (
    NoEpisodes,
    PassRateScorer,
    ReflectConfig,
    ReflectError,
    latest_decision,
    newest_model,
    reflect,
    sample_episodes,
)


@dataclass
class SeededLLM:
    """Writes, for each episode, one item naming the sampling seed and the episode's task."""

    name: str = "extractor"
    calls: list[int] = field(default_factory=list)

    def generate(self, conversations: list[list[Message]], params: SamplingParams) -> list[Generation]:
        assert params.seed is not None
        self.calls.append(params.seed)
        replies = []
        for conversation in conversations:
            task = conversation[-1]["content"].split("Problem:\n")[1].split("\n")[0]
            replies.append(f"- EXPERIENCE ITEM: seed {letter(params.seed)} learned {task}")
        return [Generation(r, [], [], "stop") for r in replies]

    def count_tokens(self, conversation: list[Message]) -> int:
        return sum(len(m["content"].split()) for m in conversation)


def letter(i: int) -> str:
    """Letters, not digits: item normalisation writes every number as 0."""
    return chr(ord("a") + i)


def words(text: str) -> int:
    return len(text.split())


def math_episode(
    i: int, *, env: str = "math", success: bool = False, model: str = "player", split: str = "train"
) -> Episode:
    turn = Turn(0, [{"role": "system", "content": "rules"}, {"role": "user", "content": f"task{letter(i)}"}], "Answer: 1", "1",
                float(success), "Correct." if success else "Incorrect: the answer read from your reply was 1")
    return Episode(env, f"t{i}", split, model, [turn], success=success, created_at=1000.0 + i)


@pytest.fixture
def store(tmp_path: Path) -> ExperienceStore:
    with ExperienceStore.open(tmp_path / "exp.db") as s:
        s.add_episodes([math_episode(i, success=i % 2 == 0) for i in range(6)])
        yield s


def scripted(scores: dict[str, float], no_context: float = 0.3) -> tuple[list[str], object]:
    """A scorer that plays 100 tasks: with no context the first 30% pass; with a text, the first
    ``scores[key]`` of them for the first key the text mentions (0 when none). Logs the texts it plays."""
    seen: list[str] = []

    def score(text: str) -> PassRate:
        seen.append(text)
        rate = no_context if not text else next((v for k, v in scores.items() if k in text), 0.0)
        return PassRate(round(100 * rate), 100, {f"v{i}": i < round(100 * rate) for i in range(100)})

    return seen, score


def test_config_validation_and_checkpoints() -> None:
    assert ReflectConfig(episodes_per_candidate=4).checkpoints(4) == [4]
    assert ReflectConfig(every=2).checkpoints(5) == [2, 4, 5]
    assert ReflectConfig(every=2).checkpoints(3) == [2, 3]  # fewer episodes than asked for
    bad_values = ({"episodes_per_candidate": 0}, {"candidates": 0}, {"budget": 0}, {"every": 0}, {"order": "oldest"},
                  {"alpha": 1.5}, {"similarity": 0}, {"knowledge": "rules"}, {"validation_tasks": 0})  # fmt: skip
    for bad in bad_values:
        with pytest.raises(ValueError):
            ReflectConfig(**bad)  # type: ignore[arg-type]


# -- sampling episodes ---------------------------------------------------------------------------


def test_sample_newest_random_successes_aliases_and_models(store: ExperienceStore) -> None:
    store.add_episodes([math_episode(10, env="opcd/Math-v1"), math_episode(11, model="other")])
    store.add_episodes([math_episode(12, split="validation")])
    newest = sample_episodes(store, "math", 3)
    assert [e.task_id for e in newest] == ["t5", "t10", "t11"]  # both names of the env, oldest first
    assert [e.task_id for e in sample_episodes(store, "math", 2, model="player")] == ["t5", "t10"]
    assert all(e.success for e in sample_episodes(store, "math", 9, only_success=True))
    one = sample_episodes(store, "math", 3, order="random", seed=1)
    assert one == sample_episodes(store, "math", 3, order="random", seed=1)
    assert {e.uuid for e in one} != {e.uuid for e in sample_episodes(store, "math", 3, order="random", seed=2)}
    assert newest_model(store, "opcd/Math-v1") == "other"


def test_no_episodes_is_a_clear_error(store: ExperienceStore) -> None:
    with pytest.raises(NoEpisodes, match=r"no train episodes of env 'sokoban'.*python -m agents.play --env sokoban"):
        sample_episodes(store, "sokoban", 4)
    with pytest.raises(NoEpisodes, match="no successful"):
        sample_episodes(store, "math", 4, model="other", only_success=True)
    with pytest.raises(NoEpisodes, match="agents.play"):
        newest_model(store, "frozenlake")


# -- reflect --------------------------------------------------------------------------------------


def test_the_gate_accepts_the_best_candidate_that_beats_no_context(store: ExperienceStore) -> None:
    llm = SeededLLM()
    seen, scorer = scripted({"seed l": 0.9, "seed k": 0.3})
    config = ReflectConfig(episodes_per_candidate=3, candidates=3, seed=10, budget=1000, knowledge="insights")
    result = reflect(store, Extractor(llm, "problem", round=2), scorer, "math", words, config, agent_model="player")
    assert llm.calls == [10, 11, 12]
    assert [c.metadata["seed"] for c in result.candidates] == [10, 11, 12]
    assert [c.validation_score for c in result.candidates] == [0.3, 0.9, 0.0]
    assert result.selected is result.candidates[1] and result.decision.accepted == result.candidates[1].uuid
    assert result.decision.verdict.startswith("accepted insights (seed 11)") and result.decision.no_context.n == 100
    stored = store.selected_knowledge_set("math")
    assert stored is not None and stored.uuid == result.candidates[1].uuid
    assert stored.validation_score == 0.9 and stored.validation_n == 100 and stored.round == 2
    assert knowledge_text(stored.items) == "seed l learned taskd\nseed l learned taske\nseed l learned taskf"
    assert sorted(seen) == sorted(["", *(knowledge_text(c.items) for c in result.candidates)])  # no context too
    # Every item is stored as written, with its provenance.
    items = store.knowledge_items(env="math")
    assert len(items) == 9 and all(i.model == "extractor" and i.round == 2 for i in items)
    assert {i.source_episodes[0] for i in items} == {e.uuid for e in result.episodes}
    assert stored.metadata["episodes"] == [e.uuid for e in result.episodes] and stored.metadata["steps"] == 3
    (run,) = store.runs()
    assert run.config["kind"] == "reflect" and run.evaluation["decision"]["accepted"] == stored.uuid
    assert latest_decision(store, "opcd/Math-v1", model="player", round=2) == result.decision
    assert latest_decision(store, "math", model="other") is None and latest_decision(store, "math", round=1) is None


def test_the_gate_refuses_knowledge_worse_than_no_context(store: ExperienceStore) -> None:
    _, scorer = scripted({"seed a": 0.25, "seed b": 0.31})  # no context: 0.30
    config = ReflectConfig(episodes_per_candidate=3, candidates=2, knowledge="insights")
    result = reflect(store, Extractor(SeededLLM(), "problem"), scorer, "math", words, config)
    assert result.selected is None and result.decision.accepted is None
    assert result.decision.verdict.startswith("no knowledge beat no context; best was insights (seed 1): +1.0 [")
    assert store.selected_knowledge_set("math") is None  # nothing selected for agents or distill.run
    decision = latest_decision(store, "math")
    assert decision is not None and decision.context_set(force=True) == result.candidates[1].uuid


def test_exemplars_and_their_mix_are_candidates(store: ExperienceStore) -> None:
    _, scorer = scripted({"Example.": 0.8})  # any set holding an exemplar
    config = ReflectConfig(episodes_per_candidate=6, candidates=1, budget=40)
    result = reflect(store, Extractor(SeededLLM(), "problem"), scorer, "math", words, config)
    kinds = [c.metadata["kind"] for c in result.candidates]
    assert kinds == ["insights", "exemplars", "mix"]
    exemplars, mix = result.candidates[1], result.candidates[2]
    assert all(i.kind == "exemplar" for i in exemplars.items) and len(exemplars.items) == 3  # the 3 successes
    assert {i.kind for i in mix.items} == {"exemplar", "experience"} and mix.token_count <= 40
    assert result.decision.accepted == exemplars.uuid  # equal gains: the first that passes


def test_intermediate_steps_are_candidates_and_equal_texts_are_scored_once(store: ExperienceStore) -> None:
    seen, scorer = scripted({"taske": 1.0})
    config = ReflectConfig(episodes_per_candidate=3, candidates=2, every=1, knowledge="insights")
    result = reflect(store, Extractor(SeededLLM(), "problem"), scorer, "math", words, config)
    assert [(c.metadata["seed"], c.metadata["steps"]) for c in result.candidates] == [
        (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)
    ]
    assert result.selected is result.candidates[1]  # first to reach the best gain
    assert len(seen) == len(set(seen)) == 7  # six texts and no context


def test_budget_and_merging_shape_the_candidates(store: ExperienceStore) -> None:
    config = ReflectConfig(episodes_per_candidate=4, candidates=1, budget=8, knowledge="insights")
    result = reflect(store, Extractor(SeededLLM(), "problem"), scripted({})[1], "math", words, config)
    (candidate,) = result.candidates
    assert knowledge_text(candidate.items) == "seed a learned taske\nseed a learned taskf"
    assert len(candidate.metadata["truncated"]) == 2 and candidate.token_count == 8


def test_test_time_mode_selects_a_seeded_random_candidate_without_scoring(store: ExperienceStore) -> None:
    def never(text: str) -> PassRate:
        raise AssertionError("test-time mode scores nothing")

    picks = set()
    for seed in range(6):
        config = ReflectConfig(episodes_per_candidate=1, candidates=3, seed=seed, mode="test-time", knowledge="insights")
        result = reflect(store, Extractor(SeededLLM(), "problem"), never, "math", words, config)
        assert result.selected is not None and result.selected.validation_score is None
        assert result.selected.metadata["selection"] == "test-time" and "unscored" in result.decision.verdict
        picks.add(result.candidates.index(result.selected))
        again = reflect(store, Extractor(SeededLLM(), "problem"), never, "math", words, config)
        assert again.candidates.index(again.selected) == result.candidates.index(result.selected)
    assert len(picks) > 1


def test_baselines_score_raw_traces_without_selecting_them(store: ExperienceStore) -> None:
    seen, scorer = scripted({"seed": 0.5})
    traces_seen, trace_scorer = scripted({"task": 0.25})
    config = ReflectConfig(episodes_per_candidate=2, candidates=1, baselines=True, knowledge="insights")
    result = reflect(store, Extractor(SeededLLM(), "problem"), scorer, "math", words, config, trace_scorer=trace_scorer)
    assert {k: v.rate for k, v in result.baselines.items()} == {"no context": 0.3, "raw traces": 0.25} and "" in seen
    assert result.trace_set is not None and traces_seen == [trace_text(result.trace_set.items)]
    stored = {s.uuid: s for s in store.knowledge_sets(env="math")}
    assert stored[result.trace_set.uuid].validation_score == 0.25 and not stored[result.trace_set.uuid].selected
    assert result.selected is not None and stored[result.selected.uuid].selected


def test_a_model_that_writes_nothing_parsable_fails_clearly(store: ExperienceStore) -> None:
    @dataclass
    class Mute(SeededLLM):
        def generate(self, conversations: list[list[Message]], params: SamplingParams) -> list[Generation]:
            return [Generation("I have no idea.", [], [], "stop") for _ in conversations]

    config = ReflectConfig(episodes_per_candidate=2, knowledge="insights")
    with pytest.raises(ReflectError, match="no parsable"):
        reflect(store, Extractor(Mute(), "problem"), scripted({})[1], "math", words, config)
    assert store.knowledge_sets() == [] and store.selected_knowledge_set("math") is None


def test_pass_rate_scorer_plays_validation_in_context(tiny_backend: HFBackend) -> None:
    scorer = PassRateScorer(tiny_backend, "qa", num_tasks=3, sampling=SamplingParams(max_new_tokens=2, temperature=0.0))
    rate = scorer("Always answer <answer>A</answer>.")
    assert rate.n == 3 and len(rate.outcomes) == 3
    assert scorer("").outcomes == scorer("   ").outcomes  # no context
