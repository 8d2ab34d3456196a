"""Batched lockstep rollouts: many env instances, one batched generation per turn.

``collect_episodes`` keeps up to ``batch_size`` episodes live; each turn it builds every live
episode's messages, sends them to the model in ONE ``generate`` call, parses and steps each env, and
yields an ``Episode`` as soon as it finishes (a free slot starts the next task). Everything a later stage
needs is recorded: the exact prompt messages, raw reply, parsed action, reward and next observation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agents.agent import Agent
from agents.records import Episode, Turn
from envs.base import TextEnv


@dataclass(frozen=True)
class Task:
    """Which task to play: a split and an index into it (the env's task pool)."""

    split: str
    index: int


@dataclass
class _Live:
    env: TextEnv
    task: Task
    observation: str
    info: dict[str, Any]
    history: list[tuple[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    total_reward: float = 0.0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class RolloutStats:
    """Running totals for progress displays."""

    episodes: int = 0
    successes: int = 0
    completion_tokens: int = 0
    generate_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generate_seconds if self.generate_seconds else 0.0


def collect_episodes(
    make_env: Callable[[], TextEnv],
    agent: Agent,
    tasks: Iterable[Task],
    *,
    env_id: str,
    batch_size: int = 8,
    round: int = 0,
    stats: RolloutStats | None = None,
    on_turn: Callable[[Turn], None] | None = None,
) -> Iterator[Episode]:
    """Play ``tasks`` with up to ``batch_size`` envs in lockstep; yield each episode when it ends.

    ``make_env`` builds one env instance per slot. ``on_turn(turn)`` is called after every step (for
    live displays). With a sampling seed, generation call ``n`` uses seed + n: reproducible, yet turns
    do not repeat one random stream. Stopping the iteration early (or Ctrl-C) loses only unfinished episodes.
    """
    stats = stats if stats is not None else RolloutStats()
    pending = iter(tasks)
    free_envs: list[TextEnv] = []
    live: list[_Live] = []
    model_name = getattr(agent.llm, "name", "unknown")
    context_id = agent.context.id if agent.context else None

    def start_next(env: TextEnv) -> bool:
        task = next(pending, None)
        if task is None:
            free_envs.append(env)
            return False
        observation, info = env.reset(options={"split": task.split, "index": task.index})
        live.append(_Live(env=env, task=task, observation=observation, info=info))
        return True

    calls = 0
    try:
        for _ in range(batch_size):
            if not start_next(make_env()):
                break
        while live:
            conversations = [agent.messages(s.env.instructions, s.history, s.observation) for s in live]
            start = time.perf_counter()
            generations = agent.act(conversations, seed_offset=calls)
            calls += 1
            stats.generate_seconds += time.perf_counter() - start
            finished: list[_Live] = []
            for slot, messages, generation in zip(live, conversations, generations):
                action = slot.env.parse_action(generation.text)
                observation, reward, terminated, truncated, info = slot.env.step(action)
                turn = Turn(
                    index=len(slot.turns),
                    prompt_messages=messages,
                    reply=generation.text,
                    action=action,
                    reward=reward,
                    observation=observation,
                    prompt_tokens=len(generation.prompt_token_ids),
                    completion_tokens=len(generation.token_ids),
                    reply_token_ids=list(generation.token_ids),
                )
                stats.completion_tokens += turn.completion_tokens
                slot.turns.append(turn)
                slot.history.append((slot.observation, generation.text))
                slot.observation, slot.info, slot.total_reward = observation, info, slot.total_reward + reward
                if on_turn:
                    on_turn(turn)
                if terminated or truncated:
                    finished.append(slot)
            for slot in finished:
                live.remove(slot)
                episode = Episode(
                    env_id=env_id,
                    task_id=str(slot.info["task_id"]),
                    split=slot.task.split,
                    model=model_name,
                    turns=slot.turns,
                    success=bool(slot.info.get("success", False)),
                    total_reward=slot.total_reward,
                    context_id=context_id,
                    round=round,
                    seed=agent.sampling.seed,
                    wall_time_s=time.perf_counter() - slot.started,
                    metadata={"task_index": slot.task.index},
                )
                stats.episodes += 1
                stats.successes += episode.success
                yield episode
                start_next(slot.env)
    finally:
        for slot in live:
            slot.env.close()
        for env in free_envs:
            env.close()
