"""Accumulation: knowledge items join a set under a token budget, near-duplicates merged.

The paper concatenates items and, past its token budget, drops the oldest (FIFO); it never
de-duplicates. Here, FIFO drops whole items only (an item is never cut), and a new item that is a
near-duplicate of one already in the set REPLACES it: the newer wording, from the newer episode, goes to
the newest position. A rediscovered insight is thereby refreshed and outlives the FIFO longer, and the set
never holds two copies. Near-duplicate means equal normalised text (numbers masked) or a word-set
Jaccard overlap of at least a threshold (``similarity.TokenOverlap``); any other ``Similarity`` (e.g.
embeddings) can replace it.

The raw-trace context (the paper's Table 6 baseline) is built here too, under the same budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.llm import LLM
from agents.records import Episode
from experience_store.records import KnowledgeItem, KnowledgeSet
from experience_store.reflect import ExtractionOptions, TaskStyle, render_outcome, render_trace
from experience_store.similarity import Similarity, TokenOverlap

CountTokens = Callable[[str], int]
TRACE_SEPARATOR = "\n\n---\n\n"


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
