"""The agent: env observations (+ an optional context) -> chat messages -> model reply -> env action.

Message layout, shared by acting, reflection and distillation (the teacher sees the same messages with
the context, the student without):

    system:    [system prompt context]  env instructions  [knowledge / handbook context block]
    user:      observation 0
    assistant: reply 0
    ...
    user:      current observation

History is windowed to fit the model's context: the oldest (observation, reply) pairs are dropped first;
the system message and the current observation are always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agents.llm import LLM, Generation, SamplingParams
from agents.records import Message
from envs.base import TextEnv

ContextKind = Literal["knowledge", "system_prompt", "handbook", "traces"]
CONTEXT_HEADINGS: dict[str, str] = {
    "knowledge": "Experience from earlier episodes (rules or strategies learned so far; they may be "
    "incomplete or wrong, use them as guidance)",
    "handbook": "Reference handbook (the facts you need)",
    "traces": "Traces of earlier episodes",
}


@dataclass(frozen=True)
class Context:
    """Text given to the agent besides the task: a knowledge set, a handbook, raw traces or a system prompt.

    A ``system_prompt`` opens the system message, as a system prompt does; the other kinds follow the
    instructions in a delimited block with a heading: ``heading``, or the kind's (``CONTEXT_HEADINGS``).
    """

    text: str
    kind: ContextKind = "knowledge"
    id: str | None = None  # provenance, e.g. the store's knowledge set id
    heading: str | None = None

    def wrap(self, instructions: str) -> str:
        """The system message: ``instructions`` with this context placed and delimited."""
        if self.kind == "system_prompt":
            return self._block() + instructions
        return instructions + self._block()

    def unwrap(self, system: str) -> str:
        """The instructions inside a system message that ``wrap`` built; ValueError for any other text."""
        block = self._block()
        if self.kind == "system_prompt" and system.startswith(block):
            return system[len(block) :]
        if self.kind != "system_prompt" and system.endswith(block):
            return system[: -len(block)]
        raise ValueError("the system message does not hold this context")

    def _block(self) -> str:
        if self.kind == "system_prompt":
            return f"{self.text.strip()}\n\n"
        return f"\n\n## {self.heading or CONTEXT_HEADINGS[self.kind]}\n<context>\n{self.text.strip()}\n</context>"


def context_from_file(path: Path, kind: ContextKind) -> Context:
    """The context in text file ``path``; a one-line ValueError naming the file when it is missing, a
    directory, unreadable, not UTF-8 text (or holds NUL bytes) or empty."""
    if path.is_dir():
        raise ValueError(f"context file {path} is a directory")
    if not path.is_file():
        raise ValueError(f"context file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"context file {path} cannot be read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"context file {path} is not UTF-8 text (byte {err.start})") from None
    if "\0" in text:
        raise ValueError(f"context file {path} is not text: it holds NUL bytes")
    if not text.strip():
        raise ValueError(f"context file {path} is empty")
    return Context(text, kind, id=str(path))


def env_context(env: TextEnv, env_name: str, name: str) -> Context:
    """The context named ``name`` that ``env`` ships (``TextEnv.contexts``); a clear error listing them otherwise."""
    shipped = env.contexts()
    if name not in shipped:
        raise ValueError(f"env {env_name!r} ships no context {name!r}; it ships: {', '.join(shipped) or 'none'}")
    kind: ContextKind = name if name in ("handbook", "system_prompt") else "knowledge"  # type: ignore[assignment]
    return Context(shipped[name], kind, id=f"{env_name}:{name}")


def with_context(messages: list[Message], context: Context) -> list[Message]:
    """The same conversation with ``context`` placed in its system message (the teacher's view)."""
    system, *rest = messages
    return [{"role": "system", "content": context.wrap(system["content"])}, *rest]


def without_context(messages: list[Message], context: Context) -> list[Message]:
    """The same conversation with ``context`` taken out of its system message (the student's view)."""
    system, *rest = messages
    return [{"role": "system", "content": context.unwrap(system["content"])}, *rest]


def build_messages(
    instructions: str,
    history: Sequence[tuple[str, str]],
    observation: str,
    context: Context | None = None,
    count_tokens: Callable[[list[Message]], int] | None = None,
    max_prompt_tokens: int | None = None,
) -> list[Message]:
    """Chat messages for the next turn; ``history`` is the episode's earlier (observation, reply) pairs.

    With ``count_tokens`` and ``max_prompt_tokens``, the oldest pairs are dropped until the prompt fits
    (the system message and current observation are kept even if they alone exceed the budget). The
    window's start moves in steps of half the pairs that fit, so it stays put for several turns in a row:
    each of those turns' prompts extends the last one, and the backend reuses its keys and values.
    """
    system = context.wrap(instructions) if context else instructions
    head: list[Message] = [{"role": "system", "content": system}]
    tail: list[Message] = [{"role": "user", "content": observation}]

    def keeping(first: int) -> list[Message]:
        middle: list[Message] = []
        for past_observation, reply in history[first:]:
            middle += [{"role": "user", "content": past_observation}, {"role": "assistant", "content": reply}]
        return head + middle + tail

    if count_tokens is None or max_prompt_tokens is None or count_tokens(keeping(0)) <= max_prompt_tokens:
        return keeping(0)
    # Dropping more pairs never lengthens the prompt: binary-search the fewest drops that fit ...
    low, high = 1, len(history)
    while low < high:
        middle_index = (low + high) // 2
        if count_tokens(keeping(middle_index)) <= max_prompt_tokens:
            high = middle_index
        else:
            low = middle_index + 1
    # ... then round them up to a multiple of half the pairs that fit (more drops still fit).
    stride = max(1, (len(history) - low) // 2)
    return keeping(min(-(-low // stride) * stride, len(history)))


@dataclass
class Agent:
    """An LLM that acts in text envs, optionally with a context in its system message."""

    llm: LLM
    sampling: SamplingParams = SamplingParams()
    context: Context | None = None
    max_prompt_tokens: int = 2048

    def messages(self, instructions: str, history: Sequence[tuple[str, str]], observation: str) -> list[Message]:
        return build_messages(
            instructions, history, observation, self.context, self.llm.count_tokens, self.max_prompt_tokens
        )

    def act(self, conversations: list[list[Message]], seed_offset: int = 0) -> list[Generation]:
        """One batched generation: a reply per conversation (sampling seed shifted by ``seed_offset``)."""
        params = self.sampling
        if params.seed is not None and seed_offset:
            params = replace(params, seed=params.seed + seed_offset)
        return self.llm.generate(conversations, params)
