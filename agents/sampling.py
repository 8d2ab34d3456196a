"""What one generation call takes (``SamplingParams``) and gives back per conversation (``Generation``).

Apart from ``agents.llm`` so that the backends, which ``agents.llm.load_llm`` imports, need not import it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy; ``top_k == 0`` disables top-k."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class Generation:
    """One reply: its text, the prompt and completion token ids, and why decoding stopped."""

    text: str
    prompt_token_ids: list[int] = field(repr=False)
    token_ids: list[int] = field(repr=False)
    finish_reason: FinishReason
