"""Selection: candidate knowledge sets, scored with no knowledge on validation, and the gate's decision.

One ``reflect`` call, for one env:

1. sample the env's stored train episodes (``sample_episodes``: the newest N, the same for every seed as
   in the paper, or a seeded random N per seed);
2. build candidates: per sampling seed, the extractor's insights about each episode in order (a success
   and a failure on the same task are shown together: ``reflect.with_contrasts``), accumulated under the
   budget (``knowledge.Accumulator``); the exemplars (successful traces as worked examples:
   ``knowledge.exemplar_items``); and their mix. Each is stored as a ``KnowledgeSet``;
3. play validation with no context and with each candidate on the same tasks, and let the gate decide
   (``decision.KnowledgeDecision``): a set is accepted only if it measurably beats no context. In the
   paper's test-time mode, a seeded random candidate is taken unscored instead.

The whole call is recorded as a reflect run whose evaluation holds the decision (``latest_decision``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import envs
from agents.agent import Agent, Context, ContextKind
from agents.evaluate import PassRate, pass_rate
from agents.llm import LLM, SamplingParams
from agents.records import Episode
from common.config import check_ranges, config_field
from experience_store.decision import GateRule, KnowledgeDecision
from experience_store.errors import StoreError
from experience_store.knowledge import Accumulator, CountTokens, exemplar_items, knowledge_text, trace_set, trace_text
from experience_store.records import KnowledgeItem, KnowledgeSet
from experience_store.reflect import Contrast, ExtractionOptions, Extractor, with_contrasts
from experience_store.similarity import TokenOverlap
from experience_store.store import ExperienceStore

Scorer = Callable[[str], PassRate]  # context text ("" = no context) -> per-task validation outcomes
Order = Literal["newest", "random"]
Mode = Literal["validation", "test-time"]
Kinds = Literal["all", "insights", "exemplars"]
Source = Episode | Contrast
MAX_TOKENS = 1 << 20  # a reply length cap past this is a typo


class ReflectError(StoreError):
    """Reflect cannot go on: an unknown env, no episodes, or no parsable knowledge."""


class NoEpisodes(ReflectError):
    """The store holds no episodes to reflect on."""


@dataclass(frozen=True)
class ReflectConfig:
    """How candidates are made and how the gate scores them; ``experience_store reflect`` and
    ``distill.loop`` (as ``--reflect-*``) build their flags from these fields."""

    episodes_per_candidate: int = config_field(
        16, "train episodes each candidate reflects on (the loop: every episode it collected)", minimum=1)
    candidates: int = config_field(3, "extraction sampling seeds, one insight set each", minimum=1, maximum=1_000)
    knowledge: Kinds = config_field(
        "all", "candidates: insights (extracted items), exemplars (successful traces as worked examples), "
        "all (both, and their mix)")
    budget: int = config_field(512, "tokens per knowledge set; the oldest items leave past it", minimum=1)
    every: int | None = config_field(None, "also make an insight candidate every N accumulation steps", minimum=1)
    order: Order = config_field(
        "newest", "newest: the same newest episodes for every seed (the paper); random: a seeded sample per seed")
    only_success: bool = config_field(False, "reflect on successful episodes only")
    contrast: bool = config_field(
        True, "show a success and a failure on the same task together and ask what made the difference (ExpeL)")
    withhold_outcome: bool = config_field(
        False, "do not tell the extractor the outcome (the paper's math setting; no contrasts then)")
    similarity: float = config_field(
        TokenOverlap().threshold, "word-overlap (Jaccard) at which two items are merged as near-duplicates",
        minimum=1e-9, maximum=1.0)
    extract_max_new_tokens: int = config_field(192, "extraction reply length cap", minimum=1, maximum=MAX_TOKENS)
    extract_temperature: float = config_field(
        0.7, "extraction sampling temperature (each seed samples its own items)", minimum=0.0)
    validation_tasks: int = config_field(
        100, "validation tasks, each played once with no context and with every candidate (a smaller split: all)",
        minimum=1)
    validation_max_new_tokens: int = config_field(128, "validation reply length cap", minimum=1, maximum=MAX_TOKENS)
    validation_temperature: float = config_field(0.0, "validation sampling temperature (0: greedy)", minimum=0.0)
    batch_size: int = config_field(8, "validation episodes played in lockstep", minimum=1, maximum=4096)
    alpha: float = config_field(
        0.05, "the gate's error rate: a set is accepted when its paired gain over no context has a lower "
        "bound above 0 at level 1 - alpha/candidates", minimum=1e-9, maximum=0.5)
    mode: Mode = config_field(
        "validation", "validation: the gate decides from scores; test-time: a seeded random candidate, "
        "unscored (the paper's test-time mode)")
    baselines: bool = config_field(False, "also score the raw traces (never selected; not with test-time)")
    seed: int = config_field(0, "candidate k samples with seed + k; validation samples with seed", minimum=0,
                             maximum=2**32 - 1)  # fmt: skip

    def __post_init__(self) -> None:
        check_ranges(self)
        for name, allowed in (("order", ("newest", "random")), ("mode", ("validation", "test-time")),
                              ("knowledge", ("all", "insights", "exemplars"))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def checkpoints(self, steps: int) -> list[int]:
        """The accumulation steps (1-based) after which the set is a candidate, for ``steps`` sources."""
        marks = set(range(self.every, steps + 1, self.every)) if self.every else set()
        return sorted(marks | {steps})

    @property
    def extraction(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.extract_max_new_tokens, temperature=self.extract_temperature,
                              top_p=0.95, top_k=20)  # fmt: skip

    @property
    def validation(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.validation_max_new_tokens, temperature=self.validation_temperature,
                              seed=self.seed)  # fmt: skip

    @property
    def options(self) -> ExtractionOptions:
        return ExtractionOptions(withhold_outcome=self.withhold_outcome)


def env_ids(env_name: str) -> list[str]:
    """The names an env's episodes may be stored under: as given, its short name, its Gymnasium id (an env
    not registered in this process: the name as given)."""
    try:
        spec = envs.spec(env_name)
    except KeyError:
        return [env_name]
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


@dataclass
class PassRateScorer:
    """Plays the first ``num_tasks`` tasks of the validation split with a context (or none) and returns
    each task's outcome.

    Every context is played with the same sampling on the same tasks, so candidates differ by their
    context only, and any two scores pair task by task. An empty text is played without a context.
    """

    llm: LLM
    env_name: str
    num_tasks: int = 100
    sampling: SamplingParams = SamplingParams(max_new_tokens=128, temperature=0.0, seed=0)
    kind: ContextKind = "knowledge"
    split: str = "validation"
    batch_size: int = 8

    @classmethod
    def from_config(cls, llm: LLM, env_name: str, config: ReflectConfig, kind: ContextKind = "knowledge") -> PassRateScorer:
        return cls(llm, env_name, config.validation_tasks, config.validation, kind, batch_size=config.batch_size)

    def __call__(self, text: str) -> PassRate:
        context = Context(text, self.kind) if text.strip() else None
        agent = Agent(self.llm, self.sampling, context)
        return pass_rate(agent, self.env_name, self.split, self.num_tasks, batch_size=self.batch_size)


@dataclass
class Reflection:
    """What ``reflect`` made: the candidates, the gate's decision, the accepted set (None: refused)."""

    episodes: list[Episode]
    candidates: list[KnowledgeSet]
    decision: KnowledgeDecision
    baselines: dict[str, PassRate] = field(default_factory=dict)
    trace_set: KnowledgeSet | None = None

    @property
    def selected(self) -> KnowledgeSet | None:
        return next((s for s in self.candidates if s.uuid == self.decision.accepted), None)


def _store_candidate(store: ExperienceStore, accumulator: Accumulator, env_id: str, round: int,
                     metadata: dict[str, object]) -> KnowledgeSet:  # fmt: skip
    candidate = accumulator.knowledge_set(env_id, round=round, metadata=metadata)
    store.add_knowledge_set(candidate)
    return candidate


def _source_episodes(source: Source) -> list[Episode]:
    return [source.success, source.failure] if isinstance(source, Contrast) else [source]


def insight_candidates(
    store: ExperienceStore,
    extractor: Extractor,
    env_id: str,
    episodes_for_seed: Callable[[int], list[Episode]],
    count_tokens: CountTokens,
    config: ReflectConfig,
    *,
    on_items: Callable[[int, int, Source, list[KnowledgeItem]], None] | None = None,
) -> list[KnowledgeSet]:
    """Per seed, extract items about its episodes (contrasted where a task has a success and a failure),
    store them, accumulate them and store the candidates.

    ``on_items(seed, step, source, items)`` sees the items of each step as they are written. Empty sets
    (the model wrote no parsable item) are no candidates.
    """
    candidates: list[KnowledgeSet] = []
    for k in range(config.candidates):
        seed = config.seed + k
        episodes = episodes_for_seed(seed)
        contrast = config.contrast and not config.withhold_outcome  # a contrast shows which attempt succeeded
        sources: list[Source] = list(with_contrasts(episodes)) if contrast else list(episodes)
        written = extractor.extract(sources, env_id=env_id, seed=seed)
        accumulator = Accumulator(count_tokens, config.budget, TokenOverlap(config.similarity))
        marks = config.checkpoints(len(sources))
        for step, (source, items) in enumerate(zip(sources, written, strict=True), start=1):
            store.add_knowledge_items(items)
            if on_items:
                on_items(seed, step, source, items)
            accumulator.add(items)
            if step in marks and accumulator.items:
                metadata = {
                    "kind": "insights", "label": f"insights (seed {seed})", "seed": seed, "steps": step,
                    "episodes": [e.uuid for src in sources[:step] for e in _source_episodes(src)],
                    "extractor": extractor.llm.name, "selection": config.mode,
                }
                candidates.append(_store_candidate(store, accumulator, env_id, extractor.round, metadata))
    return candidates


def exemplar_candidates(
    store: ExperienceStore,
    extractor: Extractor,
    env_id: str,
    episodes: Sequence[Episode],
    insights: KnowledgeSet | None,
    count_tokens: CountTokens,
    config: ReflectConfig,
) -> list[KnowledgeSet]:
    """The exemplar set (successful traces, compressed, under the budget) and, given ``insights``, the mix:
    exemplars in half the budget, then the insights in what is left."""
    exemplars = exemplar_items(episodes, extractor.style)[::-1]  # oldest first: past the budget, the oldest leave
    if not exemplars:
        return []
    store.add_knowledge_items(exemplars)
    common = {"episodes": [e.uuid for e in episodes], "extractor": "exemplars", "selection": config.mode}
    distinct = str.__eq__  # exemplars differ by their numbers, which near-duplicate matching masks
    only = Accumulator(count_tokens, config.budget, distinct)
    only.add(exemplars)
    made = [_store_candidate(store, only, env_id, extractor.round, {"kind": "exemplars", "label": "exemplars", **common})]
    if insights is not None and insights.items:
        half = Accumulator(count_tokens, max(1, config.budget // 2), distinct)
        half.add(exemplars)
        mix = Accumulator(count_tokens, config.budget, distinct, items=list(half.items))
        mix.add(insights.items)  # the insights come newest: past the budget, exemplars leave first
        label = f"mix (exemplars + {insights.metadata.get('label', 'insights')})"
        made.append(_store_candidate(store, mix, env_id, extractor.round, {"kind": "mix", "label": label, **common}))
    return made


def label(knowledge_set: KnowledgeSet) -> str:
    """How a candidate is named in tables and decisions."""
    return str(knowledge_set.metadata.get("label", knowledge_set.uuid[:12]))


def score_sets(
    store: ExperienceStore,
    sets: Sequence[KnowledgeSet],
    scorer: Scorer,
    on_score: Callable[[KnowledgeSet, PassRate], None] | None = None,
) -> dict[str, PassRate]:
    """Play each set's context once (equal texts share a score); record the score in the store and on the
    set; return the outcomes by set id."""
    by_text: dict[str, PassRate] = {}
    scores: dict[str, PassRate] = {}
    for knowledge_set in sets:
        context = knowledge_text(knowledge_set.items)
        if context not in by_text:
            by_text[context] = scorer(context)
        rate = scores[knowledge_set.uuid] = by_text[context]
        store.set_validation_score(knowledge_set.uuid, rate.rate, rate.n)
        knowledge_set.validation_score, knowledge_set.validation_n = rate.rate, rate.n
        if on_score:
            on_score(knowledge_set, rate)
    return scores


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
    on_items: Callable[[int, int, Source, list[KnowledgeItem]], None] | None = None,
    on_score: Callable[[KnowledgeSet, PassRate], None] | None = None,
) -> Reflection:
    """Build candidates from the env's train episodes (played by ``agent_model`` if given), play validation
    with no context and with each (``scorer``), and let the gate decide; the accepted set (if any) becomes
    the env's selected set. Test-time mode: a seeded random candidate, unscored.

    Knowledge sets are stored under ``env_name`` as given. With ``config.baselines``, the raw traces of
    the first seed's episodes are scored too (``trace_scorer``, e.g. a ``PassRateScorer`` of kind "traces").
    """
    model = agent_model or newest_model(store, env_name)

    def episodes_for_seed(seed: int) -> list[Episode]:
        return sample_episodes(
            store, env_name, config.episodes_per_candidate, order=config.order, seed=seed, model=agent_model,
            only_success=config.only_success,
        )

    episodes = episodes_for_seed(config.seed)  # fails early, before any extraction, when there are none
    candidates: list[KnowledgeSet] = []
    if config.knowledge in ("all", "insights"):
        candidates += insight_candidates(store, extractor, env_name, episodes_for_seed, count_tokens, config,
                                         on_items=on_items)  # fmt: skip
    if config.knowledge in ("all", "exemplars"):
        last = [s for s in candidates if s.metadata["steps"] == max(t.metadata["steps"] for t in candidates)]
        mixed_with = last[0] if last else None  # the first seed's insights from every episode
        candidates += exemplar_candidates(store, extractor, env_name, episodes, mixed_with, count_tokens, config)
    if not candidates:
        raise ReflectError(f"{extractor.llm.name} wrote no parsable '- EXPERIENCE ITEM:' line for any episode"
                           + (" and no episode succeeded (no exemplar)" if config.knowledge != "insights" else ""))  # fmt: skip
    run_id = store.create_run({"kind": "reflect", "env": env_name, "extractor": extractor.llm.name,
                               "agent_model": model, "round": extractor.round, **asdict(config)})  # fmt: skip
    baselines: dict[str, PassRate] = {}
    traces: KnowledgeSet | None = None
    if config.mode == "test-time":
        chosen = random.Random(config.seed).choice(candidates)
        decision = KnowledgeDecision(env_name, model, extractor.round, "validation",
                                     "test-time: a seeded random candidate, unscored", PassRate(0, 0), (),
                                     chosen.uuid, run_id)  # fmt: skip
    else:
        no_context = scorer("")
        scores = score_sets(store, candidates, scorer, on_score)
        decision = KnowledgeDecision.make(
            env_name, model, extractor.round, "validation", no_context,
            [(s.uuid, label(s), scores[s.uuid]) for s in candidates], GateRule(config.alpha), run_id,
        )
        if config.baselines:
            baselines["no context"] = no_context
            traces = trace_set(env_name, episodes, extractor.style, count_tokens, config.budget, extractor.options,
                               metadata={"baseline": True})  # fmt: skip
            if trace_scorer is not None and traces.items:  # not even one whole trace fits the budget: no baseline
                store.add_knowledge_set(traces)
                rate = baselines["raw traces"] = trace_scorer(trace_text(traces.items))
                store.set_validation_score(traces.uuid, rate.rate, rate.n)
                traces.validation_score, traces.validation_n = rate.rate, rate.n
            else:
                traces = None
    if decision.accepted is not None:
        store.select_knowledge_set(decision.accepted)
        for s in candidates:
            s.selected = s.uuid == decision.accepted
    evaluation = {
        "decision": decision.as_dict(),
        "baselines": {name: rate.as_dict() for name, rate in baselines.items()},
    }
    store.finish_run(run_id, "completed", evaluation=evaluation)
    return Reflection(episodes, candidates, decision, baselines, traces)


def latest_decision(
    store: ExperienceStore, env_name: str, *, model: str | None = None, round: int | None = None
) -> KnowledgeDecision | None:
    """The newest gate decision recorded for the env (by any of its names), optionally for one model and round."""
    names = set(env_ids(env_name))
    found: list[tuple[float, KnowledgeDecision]] = []
    for run in store.runs(status="completed"):
        record = run.evaluation.get("decision")
        if run.config.get("kind") != "reflect" or not isinstance(record, dict) or record.get("env") not in names:
            continue
        decision = KnowledgeDecision.from_dict(record)
        if (model is None or decision.model == model) and (round is None or decision.round == round):
            found.append((run.created_at, decision))
    return max(found, key=lambda p: p[0])[1] if found else None
