"""HFBackend on a tiny random Llama: batching, order, seeding, stop strings, finish reasons."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from agents.hf_backend import HFBackend
from agents.llm import SamplingParams, load_llm
from agents.models import DEFAULT_MODEL
from common.chat import chat_prompt_ids

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me a long story about a dragon and a knight who met at a river. " * 3}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "x" * 40}],
]


def _backend(tiny_llama: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, **kwargs: int) -> HFBackend:
    return HFBackend.from_model(tiny_llama, tokenizer, name="tiny-llama", **kwargs)


def test_batched_greedy_equals_unbatched(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase) -> None:
    lengths = {len(chat_prompt_ids(default_tokenizer, c)) for c in CONVERSATIONS}
    assert len(lengths) == len(CONVERSATIONS)  # every row needs a different amount of padding
    batched = _backend(tiny_llama, default_tokenizer, max_batch_size=16).generate(CONVERSATIONS, GREEDY)
    single = _backend(tiny_llama, default_tokenizer, max_batch_size=1)
    for conversation, got in zip(CONVERSATIONS, batched, strict=True):
        expected = single.generate([conversation], GREEDY)[0]
        assert (got.token_ids, got.text, got.finish_reason) == (expected.token_ids, expected.text, expected.finish_reason)
    assert len({tuple(g.token_ids) for g in batched}) > 1  # the rows really differ


def test_results_keep_input_order_across_buckets(
    tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase
) -> None:
    reference = _backend(tiny_llama, default_tokenizer).generate(CONVERSATIONS, GREEDY)
    for kwargs in ({"max_batch_size": 2}, {"max_batch_size": 16, "max_batch_tokens": 150}):
        backend = _backend(tiny_llama, default_tokenizer, **kwargs)
        got = backend.generate(CONVERSATIONS, GREEDY)
        for conversation, g, r in zip(CONVERSATIONS, got, reference, strict=True):
            assert g.prompt_token_ids == chat_prompt_ids(default_tokenizer, conversation)
            assert g.token_ids == r.token_ids


def test_buckets_sort_by_length_and_respect_limits(tiny_backend: HFBackend) -> None:
    lengths = [5, 50, 7, 48, 6]
    tiny_backend.max_batch_size = 2
    assert tiny_backend._batches(lengths, max_new_tokens=10) == [[1, 3], [2, 4], [0]]
    tiny_backend.max_batch_size, tiny_backend.max_batch_tokens = 16, 100
    # (50 + 10) x 2 rows > 100 tokens: the long rows go alone; the three short ones fit together.
    assert tiny_backend._batches(lengths, max_new_tokens=10) == [[1], [3], [2, 4, 0]]


def test_seeded_sampling_is_reproducible(tiny_backend: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95, top_k=50, seed=7)
    rng_before = torch.get_rng_state()
    first = tiny_backend.generate(CONVERSATIONS, params)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the seed does not leak into the caller's RNG
    second = tiny_backend.generate(CONVERSATIONS, params)
    other = tiny_backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=10, temperature=1.0, seed=8))
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]
    greedy = tiny_backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=10, temperature=0.0))
    assert [g.token_ids for g in first] != [g.token_ids for g in greedy]


def test_repeated_prompts_get_different_samples(tiny_backend: HFBackend) -> None:
    replies = tiny_backend.generate([CONVERSATIONS[0]] * 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=1))
    assert len({tuple(g.token_ids) for g in replies}) > 1


def test_max_tokens_gives_length(tiny_backend: HFBackend, default_tokenizer: PreTrainedTokenizerBase) -> None:
    for generation in tiny_backend.generate(CONVERSATIONS, GREEDY):
        assert generation.finish_reason == "length"
        assert len(generation.token_ids) == GREEDY.max_new_tokens
        assert generation.text == default_tokenizer.decode(generation.token_ids, skip_special_tokens=True)


def test_stop_string_cuts_text_and_tokens(tiny_backend: HFBackend, default_tokenizer: PreTrainedTokenizerBase) -> None:
    free = tiny_backend.generate([CONVERSATIONS[2]], GREEDY)[0]
    # A stop string made of the 4th and 5th generated tokens' text.
    before = default_tokenizer.decode(free.token_ids[:3], skip_special_tokens=True)
    stop = default_tokenizer.decode(free.token_ids[:5], skip_special_tokens=True)[len(before) :]
    assert stop and stop not in before
    steps = []
    hook = tiny_backend.model.register_forward_hook(lambda *args: steps.append(1))
    try:
        params = SamplingParams(max_new_tokens=12, temperature=0.0, stop=("@@@", stop))
        got = tiny_backend.generate([CONVERSATIONS[2]], params)[0]
    finally:
        hook.remove()
    assert len(steps) == 5  # generation stopped there, not just the text afterwards
    assert got.finish_reason == "stop"
    assert got.text == free.text[: free.text.find(stop)]
    assert got.token_ids == free.token_ids[:5]  # up to the token that completes the stop string


def test_stop_string_in_one_row_leaves_the_others(tiny_backend: HFBackend, default_tokenizer: PreTrainedTokenizerBase) -> None:
    free = tiny_backend.generate(CONVERSATIONS, GREEDY)
    stop = default_tokenizer.decode(free[0].token_ids[2:4], skip_special_tokens=True)
    got = tiny_backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=12, temperature=0.0, stop=(stop,)))
    assert got[0].finish_reason == "stop"
    for f, g in zip(free, got, strict=True):
        if stop not in f.text:
            assert (g.token_ids, g.finish_reason) == (f.token_ids, "length")


def test_eos_gives_stop_and_ends_the_tokens(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase) -> None:
    free = _backend(tiny_llama, default_tokenizer).generate([CONVERSATIONS[3]], GREEDY)[0]
    # Make the 4th greedy token an end-of-sequence token (as a chat template's end-of-turn token would be).
    model = copy.deepcopy(tiny_llama)
    end = free.token_ids[3]
    assert end not in free.token_ids[:3]
    model.generation_config.eos_token_id = [default_tokenizer.eos_token_id, end]
    got = _backend(model, default_tokenizer).generate([CONVERSATIONS[3]], GREEDY)[0]
    assert got.finish_reason == "stop"
    assert got.token_ids == free.token_ids[:4]  # eos included
    assert got.text == default_tokenizer.decode(free.token_ids[:3], skip_special_tokens=True)  # eos not in text


def test_count_tokens_matches_prompt_ids(tiny_backend: HFBackend) -> None:
    generations = tiny_backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=1, temperature=0.0))
    assert [tiny_backend.count_tokens(c) for c in CONVERSATIONS] == [len(g.prompt_token_ids) for g in generations]
    assert tiny_backend.count_tokens(CONVERSATIONS[0]) < tiny_backend.count_tokens(CONVERSATIONS[1])


def test_training_mode_is_restored(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase) -> None:
    model = copy.deepcopy(tiny_llama).train()
    _backend(model, default_tokenizer).generate(CONVERSATIONS[:1], SamplingParams(max_new_tokens=2, temperature=0.0))
    assert model.training


def test_load_llm_builds_the_hf_backend_by_name(
    tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    tiny_llama.save_pretrained(tmp_path)
    default_tokenizer.save_pretrained(tmp_path)
    llm = load_llm(str(tmp_path), backend="hf", device="cpu", max_batch_size=4)
    assert isinstance(llm, HFBackend) and llm.max_batch_size == 4 and llm.name == str(tmp_path)
    expected = _backend(tiny_llama, default_tokenizer).generate(CONVERSATIONS, GREEDY)
    assert [g.token_ids for g in llm.generate(CONVERSATIONS, GREEDY)] == [g.token_ids for g in expected]
    with pytest.raises(ValueError, match="backend"):
        load_llm(str(tmp_path), backend="tgi")  # type: ignore[arg-type]


@pytest.mark.slow
def test_default_model_answers_a_chat_message() -> None:
    llm = HFBackend(DEFAULT_MODEL)
    (reply,) = llm.generate(
        [[{"role": "user", "content": "What is the capital of France?"}]],
        SamplingParams(max_new_tokens=32, temperature=0.0),
    )
    assert reply.text.strip()
    assert reply.token_ids and reply.finish_reason in ("stop", "length")


def test_next_turn_reuses_kept_rows_and_generates_the_same(
    tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase
) -> None:
    kept = _backend(tiny_llama, default_tokenizer, prompt_cache_tokens=100_000)
    plain = _backend(tiny_llama, default_tokenizer)
    taken: list[int] = []
    take = kept.row_cache.take
    kept.row_cache.take = lambda prompt: (found := take(prompt), taken.append(found[0]))[0]  # type: ignore[method-assign]
    conversations = [list(c) for c in CONVERSATIONS]
    previous: list[int] = []
    for turn in range(3):
        taken.clear()
        got, expected = kept.generate(conversations, GREEDY), plain.generate(conversations, GREEDY)
        assert [g.token_ids for g in got] == [e.token_ids for e in expected]
        # Each row is kept once: a prompt that extends a kept row takes it, so hits leave no second copy.
        assert len(kept.row_cache) == len(conversations)
        # A later turn reuses at least the whole previous prompt of its conversation.
        assert all(t >= p for t, p in zip(sorted(taken), previous, strict=True)) if turn else taken == [0] * 5
        previous = sorted(len(g.prompt_token_ids) for g in got)
        conversations = [c + [{"role": "assistant", "content": g.text}, {"role": "user", "content": f"turn {turn}"}]
                         for c, g in zip(conversations, got, strict=True)]
    assert len(plain.row_cache) == 0  # from_model keeps nothing unless asked: its weights may change
    kept.clear_prompt_cache()
    assert len(kept.row_cache) == 0 and kept.row_cache.tokens == 0
