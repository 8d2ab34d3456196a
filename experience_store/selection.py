"""Selection: candidate knowledge sets from several sampling seeds, scored on validation, the best selected.

One ``reflect`` call, for one env:

1. sample the env's stored train episodes (``sample_episodes``: the newest N, the same for every seed as
   in the paper, or a seeded random N per seed);
2. per sampling seed, extract items about each episode in order (``reflect.Extractor``) and accumulate
   them (``knowledge.Accumulator``); the set after N steps, and every ``every`` steps before, is a
   candidate, stored as a ``KnowledgeSet`` with its seed and step count;
3. score each candidate in context on the validation split (a ``Scorer``: text -> (score, n)), record
   the score in the store and select the best (``pick_best``); or, in the paper's test-time mode, select
   a seeded random candidate without scoring.

The whole call is recorded as a run (config, scores, baselines, the selected set).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import envs
from agents.agent import Agent, Context, ContextKind
from agents.evaluate import pass_rate
from agents.llm import LLM, SamplingParams
from agents.records import Episode
from experience_store.errors import StoreError
from experience_store.knowledge import Accumulator, CountTokens, knowledge_text, trace_set, trace_text
from experience_store.records import KnowledgeItem, KnowledgeSet
from experience_store.reflect import Extractor
from experience_store.similarity import Similarity, TokenOverlap
from experience_store.store import ExperienceStore

Scorer = Callable[[str], tuple[float, int]]  # context text ("" = no context) -> (score, episodes scored)
Order = Literal["newest", "random"]
Mode = Literal["validation", "test-time"]


class ReflectError(StoreError):
    """Reflect cannot go on: an unknown env, no episodes, or no parsable knowledge."""


class NoEpisodes(ReflectError):
    """The store holds no episodes to reflect on."""


@dataclass(frozen=True)
class ReflectConfig:
    """How many candidates, from how many episodes, under which budget, selected how."""

    steps: int = 4  # episodes reflected on per candidate (accumulation steps)
    candidates: int = 3  # sampling seeds
    budget: int = 1024  # tokens per knowledge set
    every: int | None = None  # also make a candidate every this many steps (None: only after all steps)
    order: Order = "newest"  # newest: the same newest episodes for every seed; random: a seeded sample per seed
    only_success: bool = False  # reflect on successful episodes only
    seed: int = 0  # candidate k samples with seed + k
    mode: Mode = "validation"  # or test-time: a random candidate, unscored
    baselines: bool = False  # also score no context and raw traces (never selected)

    def __post_init__(self) -> None:
        for name in ("steps", "candidates", "budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.order not in ("newest", "random"):
            raise ValueError(f"order must be newest or random, got {self.order!r}")
        if self.mode not in ("validation", "test-time"):
            raise ValueError(f"mode must be validation or test-time, got {self.mode!r}")

    def checkpoints(self, steps: int) -> list[int]:
        """The accumulation steps (1-based) after which the set is a candidate, for ``steps`` episodes."""
        marks = set(range(self.every, steps + 1, self.every)) if self.every else set()
        return sorted(marks | {steps})


def env_ids(env_name: str) -> list[str]:
    """The names an env's episodes may be stored under: as given, its short name, its Gymnasium id."""
    spec = envs.spec(env_name)
    return list(dict.fromkeys([env_name, spec.name, spec.gym_id]))


def newest_model(store: ExperienceStore, env_name: str, split: str = "train") -> str:
    """The model that played the env's newest episode of ``split``; ``NoEpisodes`` when there is none."""
    newest: Episode | None = None
    for env_id in env_ids(env_name):
        for episode in _newest(store, env_id, split, None, None, 1):
            if newest is None or episode.created_at > newest.created_at:
                newest = episode
    if newest is None:
        raise NoEpisodes(
            f"{store.path} has no {split} episodes of env {env_name!r}; play some first: "
            f"python -m agents.play --env {env_name} --episodes 16 --store {store.path}"
        )
    return newest.model


def _newest(
    store: ExperienceStore, env_id: str, split: str, model: str | None, success: bool | None, count: int
) -> deque[Episode]:
    # The store lists oldest first; a bounded deque keeps the newest without holding them all.
    return deque(store.episodes(env=env_id, split=split, model=model, success=success), maxlen=count)


def sample_episodes(
    store: ExperienceStore,
    env_name: str,
    count: int,
    *,
    order: Order = "newest",
    seed: int = 0,
    model: str | None = None,
    only_success: bool = False,
    split: str = "train",
) -> list[Episode]:
    """Up to ``count`` stored episodes of the env, oldest first: the newest ones, or a seeded random sample.

    ``NoEpisodes`` (saying how to play some) when none match.
    """
    success = True if only_success else None
    pool: list[Episode] = []
    for env_id in env_ids(env_name):
        if order == "newest":
            pool += _newest(store, env_id, split, model, success, count)
        else:
            pool += store.episodes(env=env_id, split=split, model=model, success=success)
    pool.sort(key=lambda e: e.created_at)
    if not pool:
        which = " successful" if only_success else ""
        played_by = f" played by {model}" if model else ""
        raise NoEpisodes(
            f"{store.path} has no{which} {split} episodes of env {env_name!r}{played_by}; play some first: "
            f"python -m agents.play --env {env_name} --episodes 16 --store {store.path}"
        )
    if order == "newest":
        return pool[-count:]
    chosen = sorted(random.Random(seed).sample(range(len(pool)), min(count, len(pool))))
    return [pool[i] for i in chosen]


def pick_best(sets: Sequence[KnowledgeSet]) -> KnowledgeSet:
    """The scored set with the highest validation score; ties go to the larger n, then the fewer tokens,
    then the earlier set."""
    scored = [(i, s) for i, s in enumerate(sets) if s.validation_score is not None and s.validation_n is not None]
    if not scored:
        raise ValueError("no scored knowledge set to choose from")
    return min(scored, key=lambda p: (-p[1].validation_score, -p[1].validation_n, p[1].token_count, p[0]))[1]


@dataclass
class PassRateScorer:
    """Scores a context by the agent's pass rate on the first ``num_tasks`` tasks of the validation split.

    Every context is played with the same sampling seed on the same tasks, so candidates differ by their
    context only. An empty text is scored without a context.
    """

    llm: LLM
    env_name: str
    num_tasks: int = 20
    sampling: SamplingParams = SamplingParams(max_new_tokens=128, temperature=0.7, seed=0)
    kind: ContextKind = "knowledge"
    split: str = "validation"
    batch_size: int = 8

    def __call__(self, text: str) -> tuple[float, int]:
        context = Context(text, self.kind) if text.strip() else None
        agent = Agent(self.llm, self.sampling, context)
        rate = pass_rate(agent, self.env_name, self.split, self.num_tasks, batch_size=self.batch_size)
        return rate.rate, rate.n


@dataclass
class Reflection:
    """What ``reflect`` made: the candidates (scored unless test-time), the selected one, the baselines."""

    episodes: list[Episode]
    candidates: list[KnowledgeSet]
    selected: KnowledgeSet
    baselines: dict[str, tuple[float, int]] = field(default_factory=dict)  # label -> (score, n)
    trace_set: KnowledgeSet | None = None
    run_id: str = ""


def build_candidates(
    store: ExperienceStore,
    extractor: Extractor,
    env_id: str,
    episodes_for_seed: Callable[[int], list[Episode]],
    count_tokens: CountTokens,
    config: ReflectConfig,
    *,
    similar: Similarity = TokenOverlap(),
    on_items: Callable[[int, int, Episode, list[KnowledgeItem]], None] | None = None,
) -> list[KnowledgeSet]:
    """Per seed, extract items about its episodes, store them, accumulate them and store the candidates.

    ``on_items(seed, step, episode, items)`` sees the items of each step as they are written. Empty sets
    (the model wrote no parsable item) are no candidates.
    """
    candidates: list[KnowledgeSet] = []
    for k in range(config.candidates):
        seed = config.seed + k
        episodes = episodes_for_seed(seed)
        written = extractor.extract(episodes, env_id=env_id, seed=seed)
        accumulator = Accumulator(count_tokens, config.budget, similar)
        marks = config.checkpoints(len(episodes))
        for step, (episode, items) in enumerate(zip(episodes, written, strict=True), start=1):
            store.add_knowledge_items(items)
            if on_items:
                on_items(seed, step, episode, items)
            accumulator.add(items)
            if step in marks and accumulator.items:
                metadata = {
                    "seed": seed, "steps": step, "episodes": [e.uuid for e in episodes[:step]],
                    "extractor": extractor.llm.name, "selection": config.mode,
                }
                candidate = accumulator.knowledge_set(env_id, round=extractor.round, metadata=metadata)
                store.add_knowledge_set(candidate)
                candidates.append(candidate)
    return candidates


def score_sets(
    store: ExperienceStore,
    sets: Sequence[KnowledgeSet],
    scorer: Scorer,
    text: Callable[[KnowledgeSet], str],
    on_score: Callable[[KnowledgeSet], None] | None = None,
) -> None:
    """Score each set's context text once (equal texts share a score) and record it in the store and on the set."""
    scores: dict[str, tuple[float, int]] = {}
    for knowledge_set in sets:
        context = text(knowledge_set)
        if context not in scores:
            scores[context] = scorer(context)
        score, n = scores[context]
        store.set_validation_score(knowledge_set.uuid, score, n)
        knowledge_set.validation_score, knowledge_set.validation_n = score, n
        if on_score:
            on_score(knowledge_set)


def reflect(
    store: ExperienceStore,
    extractor: Extractor,
    scorer: Scorer,
    env_name: str,
    count_tokens: CountTokens,
    config: ReflectConfig = ReflectConfig(),
    *,
    agent_model: str | None = None,
    trace_scorer: Scorer | None = None,
    similar: Similarity = TokenOverlap(),
    on_items: Callable[[int, int, Episode, list[KnowledgeItem]], None] | None = None,
    on_score: Callable[[KnowledgeSet], None] | None = None,
) -> Reflection:
    """Build candidates from the env's train episodes (played by ``agent_model`` if given), score them
    with ``scorer`` and select the best for ``env_name`` (test-time mode: a seeded random one, unscored).

    Knowledge sets are stored under ``env_name`` as given (agents and distill look them up by the name
    they are given). With ``config.baselines``, no context (``scorer("")``) and the raw traces of the
    first seed's episodes (``trace_scorer``, e.g. a ``PassRateScorer`` of kind "traces") are scored too.
    """
    style = extractor.style

    def episodes_for_seed(seed: int) -> list[Episode]:
        return sample_episodes(
            store, env_name, config.steps, order=config.order, seed=seed, model=agent_model,
            only_success=config.only_success,
        )

    episodes = episodes_for_seed(config.seed)  # fails early, before any extraction, when there are none
    candidates = build_candidates(
        store, extractor, env_name, episodes_for_seed, count_tokens, config, similar=similar, on_items=on_items
    )
    if not candidates:
        raise ReflectError(f"{extractor.llm.name} wrote no parsable '- EXPERIENCE ITEM:' line for any episode")
    baselines: dict[str, tuple[float, int]] = {}
    traces: KnowledgeSet | None = None
    if config.mode == "test-time":
        selected = random.Random(config.seed).choice(candidates)
    else:
        score_sets(store, candidates, scorer, lambda s: knowledge_text(s.items), on_score)
        selected = pick_best(candidates)
        if config.baselines:
            baselines["no context"] = scorer("")
            traces = trace_set(env_name, episodes, style, count_tokens, config.budget, extractor.options,
                               metadata={"baseline": True})
            if trace_scorer is not None and traces.items:  # not even one whole trace fits the budget: no baseline
                store.add_knowledge_set(traces)
                baselines["raw traces"] = trace_scorer(trace_text(traces.items))
                store.set_validation_score(traces.uuid, *baselines["raw traces"])
                traces.validation_score, traces.validation_n = baselines["raw traces"]
            else:
                traces = None
    store.select_knowledge_set(selected.uuid)
    selected.selected = True
    run_id = store.create_run({"kind": "reflect", "env": env_name, "extractor": extractor.llm.name,
                               "agent_model": agent_model, "round": extractor.round, **asdict(config)})
    evaluation = {
        "selected": selected.uuid,
        "candidates": {s.uuid: {"score": s.validation_score, "n": s.validation_n} for s in candidates},
        "baselines": {label: {"score": score, "n": n} for label, (score, n) in baselines.items()},
    }
    store.finish_run(run_id, "completed", evaluation=evaluation)
    return Reflection(episodes, candidates, selected, baselines, traces, run_id)
