"""When two knowledge items say the same thing: normalised text and word overlap.

``TokenOverlap`` is the default ``Similarity`` for merging; any callable ``(new, kept) -> bool`` can
replace it (an embedding model's cosine similarity, say), where one is installed. ``Containment`` tells
a copy of part of a longer text (the extraction prompt's worked example).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

Similarity = Callable[[str, str], bool]  # (new text, kept text) -> near-duplicates?
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")


def normalize(text: str) -> str:
    """Lower case, compatibility-normalised, every number written as 0, punctuation dropped, whitespace
    collapsed: items that differ only in the numbers of one instance say the same thing."""
    return " ".join(_WORD.findall(_NUMBER.sub("0", unicodedata.normalize("NFKC", text).lower())))


def jaccard(a: str, b: str) -> float:
    """Overlap of the two texts' normalised word sets (0 when either has no words)."""
    left, right = set(normalize(a).split()), set(normalize(b).split())
    return len(left & right) / len(left | right) if left and right else 0.0


@dataclass(frozen=True)
class _Threshold:
    threshold: float

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class TokenOverlap(_Threshold):
    """Near-duplicates: equal normalised text, or word-set Jaccard >= ``threshold``."""

    threshold: float = 0.7

    def __call__(self, new: str, kept: str) -> bool:
        return normalize(new) == normalize(kept) or jaccard(new, kept) >= self.threshold


@dataclass(frozen=True)
class Containment(_Threshold):
    """``new`` copies part of ``kept``: at least ``threshold`` of its normalised words occur in ``kept``."""

    threshold: float = 0.8

    def __call__(self, new: str, kept: str) -> bool:
        part, whole = set(normalize(new).split()), set(normalize(kept).split())
        return bool(part) and len(part & whole) / len(part) >= self.threshold
