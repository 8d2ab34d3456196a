"""The episode record: everything about one played episode that later stages need.

One record type for the whole project: rollouts produce it, the experience store persists it, reflect
reads traces from it and distillation replays its prompts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass
class Turn:
    """One agent step: the chat messages the model saw, its raw reply, the parsed action, the outcome."""

    index: int
    prompt_messages: list[Message]
    reply: str
    action: str
    reward: float
    observation: str  # the observation returned after the action
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reply_token_ids: list[int] = field(default_factory=list)  # the sampled tokens, for exact re-scoring


@dataclass
class Episode:
    """A whole episode of one env task, with provenance (model, context, round)."""

    env_id: str
    task_id: str
    split: str
    model: str
    turns: list[Turn] = field(default_factory=list)
    success: bool = False
    total_reward: float = 0.0
    context_id: str | None = None  # the knowledge set or prompt the agent was given, if any
    round: int = 0
    seed: int | None = None
    wall_time_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)  # free-form extras, JSON-serialisable
    env_args: dict[str, Any] = field(default_factory=dict)  # the env's constructor arguments (--env-args)
    uuid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)  # unix seconds

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def prompt_tokens(self) -> int:
        return sum(t.prompt_tokens for t in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.turns)
