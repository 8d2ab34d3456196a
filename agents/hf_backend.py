"""The Hugging Face transformers backend of the ``LLM`` interface (CPU or GPU).

Prompts are rendered with the tokenizer's own chat template, sorted by length and generated in
left-padded batches with a KV cache; results come back in input order. Prompt tokens whose keys and
values are already known are not prefilled again: a prompt that extends a row generated earlier (the next
turn of a game) takes that row's keys and values (``agents.prompt_cache``), and the other prompts of a
batch that start alike (one env's instructions, one context) have their shared prefix prefilled once.

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

from agents.models import DEFAULT_MODEL, DType, load_model
from agents.prompt_cache import Layers, RowCache, batch_cache, is_plain, position_index, row_layers
from agents.records import Message
from agents.sampling import Generation, SamplingParams
from common.chat import chat_prompt_ids


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest common prefix of ``prompts``, leaving each prompt's last token outside it."""
    limit = min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


# Tokens of kept rows (prompt + reply keys and values) by default: ~1.5 GB for SmolLM2-135M in fp32.
DEFAULT_PROMPT_CACHE_TOKENS = 32768

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
    ``prompt_cache_tokens`` bounds the tokens whose keys and values are kept for the next turn's prompt
    (``agents.prompt_cache``); it is 0 (off) for ``from_model``, whose weights may change between calls
    (call ``clear_prompt_cache`` after changing a model this backend loaded).
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
        prompt_cache_tokens: int = DEFAULT_PROMPT_CACHE_TOKENS,
    ) -> None:
        model, tokenizer = load_model(name, dtype=dtype, device=device)
        self._attach(model, tokenizer, name, max_batch_size, max_batch_tokens, prompt_cache_tokens)

    @classmethod
    def from_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        max_batch_size: int = 16,
        max_batch_tokens: int | None = None,
        prompt_cache_tokens: int = 0,
    ) -> HFBackend:
        """Wrap an already loaded ``model`` and ``tokenizer`` (neither is modified)."""
        backend = cls.__new__(cls)
        backend._attach(model, tokenizer, name, max_batch_size, max_batch_tokens, prompt_cache_tokens)
        return backend

    def _attach(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        max_batch_size: int,
        max_batch_tokens: int | None,
        prompt_cache_tokens: int,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.row_cache = RowCache(prompt_cache_tokens)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # The chat template may end a turn with a token other than the tokenizer's eos: take both sources.
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_token_ids = sorted(eos_ids)

    def clear_prompt_cache(self) -> None:
        """Forget every kept row (their keys and values are stale once the model's weights change)."""
        self.row_cache.clear()

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
        cached, layers = self._cached_prefixes(prompts)
        # Row layout: [padding][cached tokens][padding][the rest of the prompt]. The attention mask hides the
        # padding and generate derives position ids from it, so every row sees the positions it would alone.
        held = max(cached)
        rest = max(len(p) - c for p, c in zip(prompts, cached, strict=True))
        width = held + rest
        pad = self.pad_token_id
        input_ids, attention_mask = [], []
        for prompt, c in zip(prompts, cached, strict=True):
            gap = rest - (len(prompt) - c)
            input_ids.append([pad] * (held - c) + prompt[:c] + [pad] * gap + prompt[c:])
            attention_mask.append([0] * (held - c) + [1] * c + [0] * gap + [1] * (len(prompt) - c))
        output = self.model.generate(
            input_ids=torch.tensor(input_ids, device=device),
            attention_mask=torch.tensor(attention_mask, device=device),
            past_key_values=batch_cache(layers, cached, self.model.config) if held else None,
            generation_config=self._generation_config(params),
            stopping_criteria=StoppingCriteriaList([_StopOnStrings(self.tokenizer, stop, width)] if stop else []),
        )
        generations = [
            self._finish(prompt, row, stop)
            for prompt, row in zip(prompts, output.sequences[:, width:].tolist(), strict=True)
        ]
        if self.row_cache.max_tokens and is_plain(output.past_key_values):
            for i, (prompt, c, gen) in enumerate(zip(prompts, cached, generations, strict=True)):
                fed = len(gen.token_ids) - 1  # the last generated token was never fed back
                spans = [(held - c, held), (width - (len(prompt) - c), width), (width, width + fed)]
                positions = position_index(spans, device)
                self.row_cache.add(prompt + gen.token_ids[:fed], row_layers(output.past_key_values, i, positions))
        return generations

    def _cached_prefixes(self, prompts: list[list[int]]) -> tuple[list[int], list[Layers | None]]:
        """Per prompt: how many leading tokens already have keys and values, and those.

        A prompt extending a row in ``row_cache`` takes that row's; the rest, when they share a prefix of at
        least ``MIN_SHARED_PREFIX`` tokens (one env's instructions, one context), get it prefilled once.
        """
        found = [self.row_cache.take(p) for p in prompts]
        cached = [length for length, _ in found]
        layers = [rows for _, rows in found]
        fresh = [i for i, length in enumerate(cached) if length == 0]
        if len(fresh) > 1:
            shared = shared_prefix_length([prompts[i] for i in fresh])
            if shared >= MIN_SHARED_PREFIX:
                prefix = torch.tensor([prompts[fresh[0]][:shared]], device=self.model.device)
                cache = self.model(input_ids=prefix, use_cache=True).past_key_values
                prefix_layers = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
                for i in fresh:
                    cached[i], layers[i] = shared, prefix_layers
        return cached, layers

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
            return_dict_in_generate=True,  # the cache comes back with the tokens
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
