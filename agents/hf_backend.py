"""The Hugging Face transformers backend of the ``LLM`` interface (CPU or GPU).

Prompts are rendered with the tokenizer's own chat template, sorted by length and generated in
left-padded batches with a KV cache; results come back in input order. The prompts of a batch often
start alike (one env's instructions, one context): that shared prefix is prefilled once and its cache
repeated across the batch, and each row's padding sits between the prefix and the row's own tokens.

What a ``Generation`` holds:

- ``text``: the decoded completion (special tokens skipped), cut before the first stop string.
- ``token_ids``: the completion tokens as generated, without padding: up to and including the eos token
  when one ends the reply, up to and including the token that completes the stop string when one does
  (so they may decode to a little more than ``text``). This matches vLLM's ``token_ids``.
- ``finish_reason``: ``"stop"`` for eos or a stop string, ``"length"`` when ``max_new_tokens`` ran out.
"""

from __future__ import annotations

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from agents.llm import Generation, SamplingParams
from agents.models import DEFAULT_MODEL, DType, load_model
from agents.records import Message


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, conversation: list[Message]) -> list[int]:
    """Token ids of ``conversation`` rendered with the tokenizer's chat template plus the generation prompt."""
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    # The template writes its own special tokens (e.g. <|im_start|>); adding BOS again would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest common prefix of ``prompts``, leaving each prompt's last token outside it."""
    limit = min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


# A shared prefix shorter than this is prefilled with the rest: not worth a separate forward pass.
MIN_SHARED_PREFIX = 16


class _StopOnStrings(StoppingCriteria):
    """Marks a row finished once its completion text (after ``prompt_len``) contains a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: object) -> torch.BoolTensor:
        # Whole-completion decode: simple and exact (stop strings spanning tokens, multi-byte characters);
        # its cost is small next to a forward pass.
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        done = [any(s in text for s in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFBackend:
    """An ``LLM`` backed by a transformers causal LM.

    ``HFBackend(name, dtype=..., device=...)`` loads a model by name (``agents.models.load_model``);
    ``HFBackend.from_model(model, tokenizer, name=...)`` wraps a live model (e.g. a student being
    trained: it is put in eval mode while generating and restored afterwards).
    ``max_batch_size`` bounds the rows per forward pass; ``max_batch_tokens``, if set, bounds
    rows x (longest prompt + max_new_tokens) per batch (a single longer row still runs alone).
    """

    name: str

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        *,
        dtype: DType = "float32",
        device: str = "cpu",
        max_batch_size: int = 16,
        max_batch_tokens: int | None = None,
    ) -> None:
        model, tokenizer = load_model(name, dtype=dtype, device=device)
        self._attach(model, tokenizer, name, max_batch_size, max_batch_tokens)

    @classmethod
    def from_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        max_batch_size: int = 16,
        max_batch_tokens: int | None = None,
    ) -> HFBackend:
        """Wrap an already loaded ``model`` and ``tokenizer`` (neither is modified)."""
        backend = cls.__new__(cls)
        backend._attach(model, tokenizer, name, max_batch_size, max_batch_tokens)
        return backend

    def _attach(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        max_batch_size: int,
        max_batch_tokens: int | None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # The chat template may end a turn with a token other than the tokenizer's eos: take both sources.
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_token_ids = sorted(eos_ids)

    def count_tokens(self, conversation: list[Message]) -> int:
        return len(chat_prompt_ids(self.tokenizer, conversation))

    def generate(self, conversations: list[list[Message]], params: SamplingParams) -> list[Generation]:
        prompts = [chat_prompt_ids(self.tokenizer, c) for c in conversations]
        stop = tuple(s for s in params.stop if s)  # an empty stop string would end every reply at once
        results: list[Generation | None] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            # fork_rng scopes the seed to this call: the caller's global RNG state is left as it was.
            devices = [self.model.device] if self.model.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, enabled=params.seed is not None), torch.inference_mode():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                for batch in self._batches([len(p) for p in prompts], params.max_new_tokens):
                    generations = self._generate_batch([prompts[i] for i in batch], params, stop)
                    for i, gen in zip(batch, generations, strict=True):
                        results[i] = gen
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _batches(self, lengths: list[int], max_new_tokens: int) -> list[list[int]]:
        """Indices grouped into batches of similar prompt length, longest first (memory peaks early)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches:
                batch = batches[-1]
                width = lengths[batch[0]] + max_new_tokens  # the first row is the batch's longest
                fits_tokens = self.max_batch_tokens is None or (len(batch) + 1) * width <= self.max_batch_tokens
                if len(batch) < self.max_batch_size and fits_tokens:
                    batch.append(i)
                    continue
            batches.append([i])
        return batches

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, stop: tuple[str, ...]) -> list[Generation]:
        device = self.model.device
        shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        cache = None
        if shared:
            prefix = torch.tensor([prompts[0][:shared]], device=device)
            cache = self.model(input_ids=prefix, use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(prompts))
        # Row layout: [shared prefix][padding][the row's own tokens]; the attention mask hides the padding
        # and generate derives position ids from it, so every row sees the positions it would alone.
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor(
            [p[:shared] + [self.pad_token_id] * (width - len(p)) + p[shared:] for p in prompts], device=device
        )
        attention_mask = torch.tensor(
            [[1] * shared + [0] * (width - len(p)) + [1] * (len(p) - shared) for p in prompts], device=device
        )
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            generation_config=self._generation_config(params),
            stopping_criteria=StoppingCriteriaList([_StopOnStrings(self.tokenizer, stop, width)] if stop else []),
        )
        return [
            self._finish(prompt, row, stop) for prompt, row in zip(prompts, output[:, width:].tolist(), strict=True)
        ]

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        """Decoding fully set by ``params``: fields left unset would be filled from the model's own
        generation config (e.g. a checkpoint's repetition_penalty or top_k)."""
        sample = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            # Greedy ignores these; the library defaults keep transformers from warning about them.
            temperature=params.temperature if sample else 1.0,
            top_p=params.top_p if sample else 1.0,
            top_k=params.top_k if sample else 50,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
            use_cache=True,
        )

    def _finish(self, prompt: list[int], completion: list[int], stop: tuple[str, ...]) -> Generation:
        """Cut one generated row at eos or the first stop string (see the module docstring)."""
        eos_at = next((k for k, t in enumerate(completion) if t in self.eos_token_ids), None)
        body = completion if eos_at is None else completion[:eos_at]
        text = self._decode(body)
        cuts = [p for p in (text.find(s) for s in stop) if p >= 0]
        if cuts:
            return Generation(
                text=text[: min(cuts)],
                prompt_token_ids=prompt,
                token_ids=body[: self._stop_token_count(body, stop)],
                finish_reason="stop",
            )
        if eos_at is not None:
            return Generation(text=text, prompt_token_ids=prompt, token_ids=completion[: eos_at + 1], finish_reason="stop")
        return Generation(text=text, prompt_token_ids=prompt, token_ids=completion, finish_reason="length")

    def _stop_token_count(self, tokens: list[int], stop: tuple[str, ...]) -> int:
        """The fewest leading ``tokens`` whose text contains a stop string (the step generation stopped at)."""
        lo, hi = 1, len(tokens)  # the full list contains one; a prefix's text only grows with its length
        while lo < hi:
            mid = (lo + hi) // 2
            text = self._decode(tokens[:mid])
            if any(s in text for s in stop):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)
