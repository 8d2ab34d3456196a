"""The collect -> reflect -> distill loop, in rounds (the follow-up paper's online experiential learning).

Round r, with model M_r (the start model for r = 1, then the previous round's merged checkpoint):

1. collect: M_r plays ``episodes`` train episodes of the env without a context; they go to the store
   with ``round = r``;
2. reflect: M_r writes knowledge items about those episodes, candidate sets are scored in context on the
   validation split, the best is selected (``experience_store.selection.reflect``);
3. distill: OPCD from M_r, with M_r frozen as the teacher holding the selected set as its context;
4. evaluate (inside 3): the test split without the context (the student), with it (in-context) and
   the out-of-distribution env, before and after.

Every phase checks what is already done (episodes of the round in the store, a selected set of the
round, the round's checkpoints), so a killed loop resumes at the round, phase and step where it stopped.
``loop.json`` records the loop's settings: resuming with other ones (``LOOP_MAY_CHANGE`` aside) is refused,
and so is a selected set of the round that another model wrote.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import envs
from agents.agent import Agent, Context
from agents.hf_backend import HFBackend
from agents.llm import SamplingParams
from agents.rollout import Task, collect_episodes
from distill.checkpoint import MAY_CHANGE, setting_changes
from common.config import config_field
from distill.config import DistillConfig
from distill.training import EvalResults, train
from experience_store import ExperienceStore
from experience_store.knowledge import knowledge_text, llm_token_counter
from experience_store.records import KnowledgeSet
from experience_store.reflect import Extractor, task_style
from experience_store.selection import PassRateScorer, ReflectConfig, reflect


@dataclass
class LoopConfig:
    """The loop's own knobs; each round's distillation takes the rest from a ``DistillConfig``."""

    rounds: int = config_field(3, "rounds of collect, reflect, distill")
    episodes: int = config_field(16, "train episodes collected per round")
    reflect_steps: int = config_field(4, "episodes reflected on per candidate knowledge set")
    reflect_candidates: int = config_field(3, "candidate knowledge sets per round (sampling seeds)")
    reflect_budget: int = config_field(512, "token budget of a knowledge set")
    validation_tasks: int = config_field(20, "validation tasks scoring each candidate")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")


@dataclass
class RoundResult:
    """One finished round: its model, the selected knowledge, evaluations and the next model."""

    round: int
    model: str
    knowledge_set: str
    knowledge: str
    before: EvalResults
    after: EvalResults
    mean_reply_tokens: float
    checkpoint: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings a resumed loop may change: more --rounds, and what a resumed distillation run may change except
# --steps (finished rounds were trained for their number of steps).
LOOP_MAY_CHANGE = (MAY_CHANGE - {"steps"}) | {"rounds"}


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
        if "settings" not in data:
            raise ValueError(f"{path} does not record the loop's settings, so resuming cannot check them; "
                             "start a new loop in another --out-dir")  # fmt: skip
        changes = setting_changes(data["settings"], settings, LOOP_MAY_CHANGE)
        if changes:
            raise ValueError(f"cannot resume the loop in {path.parent} with other settings: {'; '.join(changes)} "
                             "(resume with the same settings, or start a new loop in another --out-dir)")  # fmt: skip
        return cls(settings, data["run_id"], [RoundResult(**r) for r in data["rounds"]])

    def save(self, path: Path) -> None:
        state = {"settings": self.settings, "run_id": self.run_id, "rounds": [r.as_dict() for r in self.rounds]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)


def collect(store: ExperienceStore, base: DistillConfig, loop: LoopConfig, model: str, round: int) -> float:
    """Play the round's missing train episodes with ``model``; return their mean reply length in tokens."""
    have = list(store.episodes(env=base.env, split="train", model=model, round=round))
    missing = loop.episodes - len(have)
    if missing > 0:
        size = envs.make(base.env).split_sizes["train"]
        order = np.resize(np.random.default_rng([base.seed, round]).permutation(size), loop.episodes)
        indices = order[len(have) :]
        llm = HFBackend(model, dtype=base.dtype, device=base.device)  # type: ignore[arg-type]
        sampling = SamplingParams(max_new_tokens=base.max_new_tokens, temperature=base.temperature, seed=base.seed + round)
        agent = Agent(llm, sampling, None, base.max_prompt_tokens)
        tasks = [Task("train", int(i)) for i in indices]
        for episode in collect_episodes(lambda: envs.make(base.env), agent, tasks, env_id=base.env, round=round):
            store.add_episodes([episode])
            have.append(episode)
    turns = [t for e in have for t in e.turns]
    return sum(t.completion_tokens for t in turns) / max(1, len(turns))


def select_knowledge(store: ExperienceStore, base: DistillConfig, loop: LoopConfig, model: str, round: int) -> KnowledgeSet:
    """The round's selected knowledge set: already in the store, or made now by reflect."""
    selected = store.selected_knowledge_set(base.env)
    if selected is not None and selected.round == round:
        writers = sorted({item.model for item in selected.items} - {model})
        if writers:
            raise ValueError(f"the selected {base.env} knowledge set of round {round} in {store.path} ({selected.uuid}) "
                             f"was written by {', '.join(writers)}, not by this round's model {model}; "
                             "give the loop a store of its own")  # fmt: skip
        return selected
    llm = HFBackend(model, dtype=base.dtype, device=base.device)  # type: ignore[arg-type]
    extractor = Extractor(llm, task_style(base.env), round=round)
    evaluation = SamplingParams(max_new_tokens=base.eval_max_new_tokens, temperature=0.0)
    scorer = PassRateScorer(llm, base.env, loop.validation_tasks, evaluation)
    config = ReflectConfig(
        steps=loop.reflect_steps, candidates=loop.reflect_candidates, budget=loop.reflect_budget, seed=base.seed
    )
    return reflect(store, extractor, scorer, base.env, llm_token_counter(llm), config, agent_model=model).selected


def run_rounds(
    base: DistillConfig,
    loop: LoopConfig,
    store: ExperienceStore,
    *,
    on_phase: Callable[[int, str], None] | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> list[RoundResult]:
    """Run (or resume) the loop; ``base.out_dir`` holds ``loop.json`` and one folder per round."""
    base.configure_env()
    state_path = base.out_dir / "loop.json"
    state = LoopState.load(state_path, {**base.to_dict(), **dataclasses.asdict(loop)})
    base.out_dir.mkdir(parents=True, exist_ok=True)
    if state.run_id is None:
        state.run_id = store.create_run({"kind": "loop", **state.settings})
        state.save(state_path)
    phase = on_phase or (lambda r, name: None)
    model = state.rounds[-1].checkpoint if state.rounds else base.model
    for round in range(len(state.rounds) + 1, loop.rounds + 1):
        phase(round, "collect")
        reply_tokens = collect(store, base, loop, model, round)
        phase(round, "reflect")
        selected = select_knowledge(store, base, loop, model, round)
        text = knowledge_text(selected.items)
        phase(round, "distill")
        config = dataclasses.replace(base, model=model, out_dir=base.out_dir / f"round-{round}", merge_lora=True)
        context = Context(text, "knowledge", id=selected.uuid)
        result = train(config, context, store=store, resume=True)
        merged = str(result.checkpoint / "merged") if config.uses_lora else str(result.checkpoint)
        finished = RoundResult(round, model, selected.uuid, text, result.before, result.after, reply_tokens, merged)
        state.rounds.append(finished)
        state.save(state_path)
        metrics = {f"{when}/{column}": r["rate"] for when, res in (("before", result.before), ("after", result.after)) for column, r in res.items()}
        store.log_run_metrics(state.run_id, round, {**metrics, "collect/mean_reply_tokens": reply_tokens})
        if on_round:
            on_round(finished)
        model = merged
    if state.rounds and len(state.rounds) == loop.rounds:
        store.finish_run(state.run_id, "completed", state.rounds[-1].checkpoint, {"rounds": [r.as_dict() for r in state.rounds]})
    return state.rounds
