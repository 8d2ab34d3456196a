"""Accumulation: knowledge items join a set under a token budget, near-duplicates merged.

The paper concatenates items and, past its token budget, drops the oldest (FIFO); it never
de-duplicates. Here, FIFO drops whole items only (an item is never cut), and a new item that is a
near-duplicate of one already in the set REPLACES it: the newer wording, from the newer episode, goes to
the newest position. A rediscovered insight is thereby refreshed and outlives the FIFO longer, and the set
never holds two copies. Near-duplicate means equal normalised text (numbers masked) or a word-set
Jaccard overlap of at least a threshold (``similarity.TokenOverlap``); any other ``Similarity`` (e.g.
embeddings) can replace it.

The raw-trace context (the paper's Table 6 baseline) is built here too, under the same budget, and so
are exemplars: successful traces compressed into worked examples, the kind of context a 135M model
measurably uses (addition: 7% -> 32% after OPCD with a worked example in context).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.llm import LLM
from agents.records import Episode
from experience_store.records import KnowledgeItem, KnowledgeSet
from experience_store.reflect import (
    ExtractionOptions,
    TaskStyle,
    render_outcome,
    render_trace,
    strip_thinking,
    task_key,
)
from experience_store.similarity import Similarity, TokenOverlap

CountTokens = Callable[[str], int]
TRACE_SEPARATOR = "\n\n---\n\n"
# About 100-150 tokens of the default model's tokenizer: four or five exemplars fit a 512-token budget.
EXEMPLAR_MAX_CHARS = 400
_MIN_REPLY_CHARS = 40  # a reply cut shorter than this shows no working: no exemplar


def llm_token_counter(llm: LLM) -> CountTokens:
    """Tokens of a text under ``llm``'s tokenizer: its length as a chat message, less an empty message's."""
    empty = llm.count_tokens([{"role": "user", "content": ""}])
    return lambda text: llm.count_tokens([{"role": "user", "content": text}]) - empty


def knowledge_text(items: Sequence[KnowledgeItem]) -> str:
    """A knowledge set as context text: one item per line, oldest first (what agents and distill see)."""
    return "\n".join(item.text for item in items)


@dataclass
class Accumulator:
    """A knowledge set under construction: ``add`` items step by step, ``knowledge_set`` to store it.

    ``merged`` maps a kept item's uuid to the uuids of the near-duplicates it replaced; ``truncated``
    lists the uuids that left through the budget, oldest first.
    """

    count_tokens: CountTokens
    budget: int
    similar: Similarity = field(default_factory=TokenOverlap)
    items: list[KnowledgeItem] = field(default_factory=list)
    merged: dict[str, list[str]] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1 token, got {self.budget}")

    def add(self, new: Sequence[KnowledgeItem]) -> None:
        """Append ``new`` (merging near-duplicates), then drop the oldest whole items past the budget."""
        for item in new:
            replaced = [kept for kept in self.items if self.similar(item.text, kept.text)]
            if replaced:
                gone = {kept.uuid for kept in replaced}
                self.items = [kept for kept in self.items if kept.uuid not in gone]
                self.merged[item.uuid] = [u for kept in replaced for u in [*self.merged.pop(kept.uuid, []), kept.uuid]]
            self.items.append(item)
        while self.items and self.token_count > self.budget:
            self.truncated.append(self.items.pop(0).uuid)

    @property
    def text(self) -> str:
        return knowledge_text(self.items)

    @property
    def token_count(self) -> int:
        return self.count_tokens(self.text) if self.items else 0

    def knowledge_set(self, env_id: str, *, round: int = 0, metadata: dict[str, Any] | None = None) -> KnowledgeSet:
        """The current items as a ``KnowledgeSet``; its metadata records the budget, merges and truncations."""
        provenance = {"budget": self.budget, "merged": dict(self.merged), "truncated": list(self.truncated)}
        return KnowledgeSet(
            env_id, list(self.items), self.token_count, round=round, metadata={**provenance, **(metadata or {})}
        )


def trace_items(
    episodes: Sequence[Episode], style: TaskStyle, options: ExtractionOptions = ExtractionOptions()
) -> list[KnowledgeItem]:
    """Each episode's rendered trace and outcome as one ``raw_trace`` item (the raw-trace baseline)."""
    items = []
    for episode in episodes:
        outcome = render_outcome(episode, options)
        text = render_trace(episode, style, options) + (f"\n{outcome}" if outcome else "")
        items.append(
            KnowledgeItem(
                text, kind="raw_trace", env_id=episode.env_id, model=episode.model, round=episode.round,
                source_episodes=[episode.uuid],
            )
        )
    return items


def trace_set(
    env_id: str,
    episodes: Sequence[Episode],
    style: TaskStyle,
    count_tokens: CountTokens,
    budget: int,
    options: ExtractionOptions = ExtractionOptions(),
    metadata: dict[str, Any] | None = None,
) -> KnowledgeSet:
    """Raw traces as a context (give it to agents as ``Context(kind="traces")``): the newest whole traces
    that fit ``budget``, oldest first, like the FIFO of extracted knowledge."""
    kept: list[KnowledgeItem] = []
    for item in reversed(trace_items(episodes, style, options)):
        if count_tokens(trace_text([item, *kept])) > budget:
            break
        kept.insert(0, item)
    return KnowledgeSet(
        env_id, kept, count_tokens(trace_text(kept)) if kept else 0,
        metadata={"kind": "raw_trace", "budget": budget, **(metadata or {})},
    )


def trace_text(items: Sequence[KnowledgeItem]) -> str:
    """Raw-trace items as context text, traces separated by a rule."""
    return TRACE_SEPARATOR.join(item.text for item in items)


def exemplar_item(
    episode: Episode, style: TaskStyle, *, max_chars: int = EXEMPLAR_MAX_CHARS
) -> KnowledgeItem | None:
    """A successful episode as a worked example (kind ``exemplar``), in the form of the envs' own
    ``worked_example`` context; None for a failure or where it cannot be made ``max_chars`` short.

    A single-step problem is ``Example. Problem: <observation>\nReply: <reply>``: the observation is the
    problem without the env's instructions (they are in the system message), blank lines dropped; the
    reply loses its reasoning blocks and, past the cap, its head (the tail holds the answer). A game
    is ``Example. Start:\n<first observation>\nMoves that solved it: <action>; <action>; ...``, or None
    when that does not fit.
    """
    if not episode.success or not episode.turns:
        return None
    first = _compact(episode.turns[0].prompt_messages[-1]["content"])
    if style == "problem" and len(episode.turns) == 1:
        head = f"Example. Problem: {first}\nReply: "
        reply = _tail(_compact(strip_thinking(episode.turns[0].reply)), max_chars - len(head))
        text = None if reply is None else head + reply
    else:
        text = f"Example. Start:\n{first}\nMoves that solved it: " + "; ".join(t.action for t in episode.turns)
    if text is None or len(text) > max_chars:
        return None
    return KnowledgeItem(
        text, kind="exemplar", env_id=episode.env_id, model=episode.model, round=episode.round,
        source_episodes=[episode.uuid], metadata={"task_id": episode.task_id},
    )


def exemplar_items(
    episodes: Sequence[Episode], style: TaskStyle, *, max_chars: int = EXEMPLAR_MAX_CHARS
) -> list[KnowledgeItem]:
    """Exemplars of the successes in ``episodes``, one per task (env and ``task_id``), NEWEST FIRST (by
    ``created_at``): a task's newest success that can be made short. Take a prefix to fit a budget."""
    newest_first = sorted(enumerate(episodes), key=lambda pair: (pair[1].created_at, pair[0]), reverse=True)
    items: list[KnowledgeItem] = []
    done: set[tuple[str, str]] = set()
    for _, episode in newest_first:
        if task_key(episode) in done:
            continue
        item = exemplar_item(episode, style, max_chars=max_chars)
        if item is not None:
            done.add(task_key(episode))
            items.append(item)
    return items


def _compact(text: str) -> str:
    """``text`` without blank lines and with each line's edges stripped."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _tail(text: str, max_chars: int) -> str | None:
    """``text``, or its last ``max_chars`` from a word start after "... "; None when too little would be left."""
    if len(text) <= max_chars:
        return text if text else None
    if max_chars < _MIN_REPLY_CHARS:
        return None
    cut = text[len(text) - (max_chars - 4) :]
    space = cut.find(" ")
    return "... " + (cut[space + 1 :] if 0 <= space < len(cut) // 2 else cut)
