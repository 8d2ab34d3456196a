"""The collect -> reflect -> distill loop, in rounds (the follow-up paper's online experiential learning).

Round r, with model M_r (the start model for r = 1, then the previous round's merged checkpoint):

1. collect: M_r plays ``episodes`` train episodes of the env without a context; they go to the store
   with ``round = r``;
2. reflect: M_r (or ``--reflect-model``) makes candidate knowledge from every episode of the round, M_r
   plays validation with each and with no knowledge, and the gate decides (``experience_store.selection.
   reflect``, ``experience_store.decision``). When no set beats no context, the round distils nothing
   (``--force-distill``: the best candidate anyway) and the next round starts from M_r again;
3. distill: OPCD from M_r, with M_r frozen as the teacher holding the accepted set as its context;
4. evaluate (inside 3): the test split without the context (the student), with it (in-context) and
   the out-of-distribution env, before and after.

Every phase checks what is already done (episodes of the round in the store, the gate's decision for
this model and round, the round's checkpoints), so a killed loop resumes at the round, phase and step
where it stopped. ``loop.json`` records the loop's settings: resuming with other ones (``LOOP_MAY_CHANGE``
aside) is refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import envs
from agents.agent import Agent, Context
from agents.hf_backend import DEFAULT_PROMPT_CACHE_TOKENS, HFBackend
from agents.evaluate import Evaluation, evaluate
from agents.llm import LLM, SamplingParams
from agents.models import load_model
from agents.rollout import Task, collect_episodes
from common.config import config_field
from common.files import write_text_atomic
from distill.checkpoint import MAY_CHANGE, setting_changes
from distill.config import DistillConfig
from distill.training import EvalResults, train
from experience_store import ExperienceStore
from experience_store.decision import KnowledgeDecision
from experience_store.knowledge import knowledge_text, llm_token_counter
from experience_store.reflect import Extractor, task_style
from experience_store.selection import PassRateScorer, ReflectConfig, latest_decision, reflect

# ReflectConfig fields the loop sets itself: it reflects on every episode it collected, with its own seed,
# through the gate (validation mode), without the raw-trace baseline.
LOOP_SETS = ("episodes_per_candidate", "seed", "mode", "baselines")


@dataclass
class LoopConfig:
    """The loop's own knobs; reflection takes its settings from a ``ReflectConfig`` (``--reflect-*``),
    each round's distillation from a ``DistillConfig``."""

    rounds: int = config_field(3, "rounds of collect, reflect, distill")
    episodes: int = config_field(16, "train episodes collected per round (reflect reads all of them)")
    reflect_model: str | None = config_field(
        None, "the model that writes the knowledge (default: the round's model; e.g. a larger one, cross-size)")
    force_distill: bool = config_field(
        False, "distil the best candidate even when the gate finds no set better than no context")

    def __post_init__(self) -> None:
        for name in ("rounds", "episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class RoundResult:
    """One finished round: its model, the gate's verdict, the distilled knowledge, evaluations and the next
    model. When the gate refused the knowledge: no knowledge set, ``before`` holds the test split with no
    context and with the best refused candidate (``refused_check``), ``after`` is empty, and the next model
    is this one."""

    round: int
    model: str
    verdict: str
    knowledge_set: str | None
    knowledge: str
    before: EvalResults
    after: EvalResults
    mean_reply_tokens: float
    checkpoint: str

    @property
    def distilled(self) -> bool:
        return self.knowledge_set is not None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings a resumed loop may change: more --rounds, --force-distill (for the rounds still to come), and what a
# resumed distillation run may change except --steps (finished rounds were trained for their number of steps).
LOOP_MAY_CHANGE = (MAY_CHANGE - {"steps"}) | {"rounds", "force_distill"}


@dataclass
class LoopState:
    """``loop.json`` in the output folder: the loop's settings, the store's run id and the finished rounds."""

    settings: dict[str, Any]
    run_id: str | None = None
    rounds: list[RoundResult] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, settings: dict[str, Any]) -> LoopState:
        """The state in ``path`` (a new one with ``settings`` when there is none); a one-line ValueError naming
        every setting that differs from those the loop started with (``LOOP_MAY_CHANGE`` aside)."""
        if not path.is_file():
            return cls(settings)
        data = json.loads(path.read_text(encoding="utf-8"))
        if "settings" not in data or any("verdict" not in r for r in data.get("rounds", [])):
            raise ValueError(f"{path} was written by an older version (no settings or no gate verdicts), so "
                             "resuming cannot check it; start a new loop in another --out-dir")  # fmt: skip
        changes = setting_changes(data["settings"], settings, LOOP_MAY_CHANGE)
        if changes:
            raise ValueError(f"cannot resume the loop in {path.parent} with other settings: {'; '.join(changes)} "
                             "(resume with the same settings, or start a new loop in another --out-dir)")  # fmt: skip
        return cls(settings, data["run_id"], [RoundResult(**r) for r in data["rounds"]])

    def save(self, path: Path) -> None:
        state = {"settings": self.settings, "run_id": self.run_id, "rounds": [r.as_dict() for r in self.rounds]}
        write_text_atomic(path, json.dumps(state, indent=1))


def collect(store: ExperienceStore, base: DistillConfig, loop: LoopConfig, llm: LLM, round: int) -> float:
    """Play the round's missing train episodes with ``llm``; return their mean reply length in tokens."""
    have = list(store.episodes(env=base.env, split="train", model=llm.name, round=round))
    missing = loop.episodes - len(have)
    if missing > 0:
        size = envs.make(base.env).split_sizes["train"]
        order = np.resize(np.random.default_rng([base.seed, round]).permutation(size), loop.episodes)
        indices = order[len(have) :]
        sampling = SamplingParams(max_new_tokens=base.max_new_tokens, temperature=base.temperature, seed=base.seed + round)
        agent = Agent(llm, sampling, None, base.max_prompt_tokens)
        tasks = [Task("train", int(i)) for i in indices]
        for episode in collect_episodes(lambda: envs.make(base.env), agent, tasks, env_id=base.env, round=round):
            episode.env_args = envs.parse_env_args(base.env_args)
            store.add_episodes([episode])
            have.append(episode)
    turns = [t for e in have for t in e.turns]
    return sum(t.completion_tokens for t in turns) / max(1, len(turns))


def decide_knowledge(store: ExperienceStore, base: DistillConfig, loop: LoopConfig, reflection: ReflectConfig,
                     llm: LLM, round: int) -> KnowledgeDecision:  # fmt: skip
    """The gate's decision for this model and round: already in the store, or made now by reflect on every
    train episode this model played in this round."""
    decision = latest_decision(store, base.env, model=llm.name, round=round)
    if decision is not None:
        return decision
    writer = llm if loop.reflect_model in (None, llm.name) else _load(loop.reflect_model, base)
    extractor = Extractor(writer, task_style(base.env), reflection.options, reflection.extraction, round=round)
    scorer = PassRateScorer.from_config(llm, base.env, reflection)
    return reflect(store, extractor, scorer, base.env, llm_token_counter(writer), reflection, agent_model=llm.name).decision


def refused_check(store: ExperienceStore, base: DistillConfig, decision: KnowledgeDecision, llm: LLM) -> EvalResults:
    """The test split with no context and with the best refused candidate in context (greedy, the tasks a
    distillation would measure): did refusing cost anything? Keys as a distillation's "before" evaluation."""
    best = store.knowledge_set(decision.context_set(force=True))
    sampling = SamplingParams(max_new_tokens=base.eval_max_new_tokens, temperature=0.0, seed=base.seed)
    context = Context(knowledge_text(best.items), "knowledge", id=best.uuid, heading=base.context_heading)
    contexts = {"student": None, "student_with_context": context}
    return {
        column: evaluate(llm, sampling, Evaluation(base.env, base.eval_split, base.eval_tasks, context),
                         max_prompt_tokens=base.max_prompt_tokens, batch_size=base.eval_batch_size).as_dict()
        for column, context in contexts.items()
    }  # fmt: skip


def _load(model: str, base: DistillConfig) -> HFBackend:
    return HFBackend(model, dtype=base.dtype, device=base.device)  # type: ignore[arg-type]


def run_rounds(
    base: DistillConfig,
    loop: LoopConfig,
    store: ExperienceStore,
    reflection: ReflectConfig = ReflectConfig(),
    *,
    on_phase: Callable[[int, str], None] | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> list[RoundResult]:
    """Run (or resume) the loop; ``base.out_dir`` holds ``loop.json`` and one folder per round.

    ``reflection``'s ``LOOP_SETS`` fields are the loop's: every collected episode, ``base.seed``, the gate.
    """
    base.configure_env()
    reflection = dataclasses.replace(reflection, episodes_per_candidate=loop.episodes, seed=base.seed,
                                     mode="validation", baselines=False)  # fmt: skip
    state_path = base.out_dir / "loop.json"
    reflect_settings = {f"reflect_{k}": v for k, v in dataclasses.asdict(reflection).items() if k not in LOOP_SETS}
    state = LoopState.load(state_path, {**base.to_dict(), **dataclasses.asdict(loop), **reflect_settings})
    base.out_dir.mkdir(parents=True, exist_ok=True)
    if state.run_id is None:
        state.run_id = store.create_run({"kind": "loop", **state.settings})
        state.save(state_path)
    phase = on_phase or (lambda r, name: None)
    model = state.rounds[-1].checkpoint if state.rounds else base.model
    loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None
    for round in range(len(state.rounds) + 1, loop.rounds + 1):
        # One load per round (two before): these weights play, reflect, then train, which changes them in place
        # (LoRA layers, or the weights), so the next round loads its new model; after a refused round they are kept.
        loaded = loaded or load_model(model, dtype=base.dtype, device=base.device)  # type: ignore[arg-type]
        llm = HFBackend.from_model(*loaded, name=model, prompt_cache_tokens=DEFAULT_PROMPT_CACHE_TOKENS)
        phase(round, "collect")
        reply_tokens = collect(store, base, loop, llm, round)
        phase(round, "reflect")
        decision = decide_knowledge(store, base, loop, reflection, llm, round)
        if decision.accepted is None and not loop.force_distill:
            phase(round, "test the refused knowledge")
            checked = refused_check(store, base, decision, llm)
            finished = RoundResult(round, model, decision.verdict, None, "", checked, {}, reply_tokens, model)
        else:
            chosen = store.knowledge_set(decision.context_set(force=loop.force_distill))
            text = knowledge_text(chosen.items)
            phase(round, "distill")
            config = dataclasses.replace(base, model=model, out_dir=base.out_dir / f"round-{round}", merge_lora=True)
            result = train(config, Context(text, "knowledge", id=chosen.uuid), store=store, resume=True, loaded=loaded)
            loaded = None
            merged = str(result.checkpoint / "merged") if config.uses_lora else str(result.checkpoint)
            verdict = decision.verdict if decision.accepted else f"forced: {decision.verdict}"
            finished = RoundResult(round, model, verdict, chosen.uuid, text, result.before, result.after, reply_tokens, merged)
        del llm
        state.rounds.append(finished)
        state.save(state_path)
        metrics = {f"{when}/{column}": r["rate"] for when, res in (("before", finished.before), ("after", finished.after))
                   for column, r in res.items()}  # fmt: skip
        store.log_run_metrics(state.run_id, round, {**metrics, "collect/mean_reply_tokens": reply_tokens,
                                                    "distilled": float(finished.distilled)})  # fmt: skip
        if on_round:
            on_round(finished)
        model = finished.checkpoint
    if state.rounds and len(state.rounds) == loop.rounds:
        store.finish_run(state.run_id, "completed", state.rounds[-1].checkpoint, {"rounds": [r.as_dict() for r in state.rounds]})
    return state.rounds
