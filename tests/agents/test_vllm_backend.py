"""VLLMBackend: a clear error without vLLM; with vLLM and a GPU, the same contract as HFBackend."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from agents.hf_backend import chat_prompt_ids
from agents.llm import SamplingParams, load_llm
from agents.models import DEFAULT_MODEL
from agents.vllm_backend import VLLMBackend

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Count from one to twenty in words, separated by commas."}],
]

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason='needs vLLM and a GPU: pip install -e ".[vllm]" on a GPU machine',
)


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    for build in (lambda: VLLMBackend(DEFAULT_MODEL), lambda: load_llm(DEFAULT_MODEL, backend="vllm")):
        with pytest.raises(ImportError, match=r'pip install -e "\.\[vllm\]"') as error:
            build()
        assert "GPU" in str(error.value) and "transformers below 5.20" in str(error.value)


def test_vllm_backend_takes_no_device() -> None:
    with pytest.raises(ValueError, match="device"):
        load_llm(DEFAULT_MODEL, backend="vllm", device="cpu")


@pytest.fixture(scope="module")
def vllm_backend() -> VLLMBackend:
    return VLLMBackend(DEFAULT_MODEL, gpu_memory_utilization=0.3)


@needs_vllm
@pytest.mark.slow
def test_vllm_generates_in_order_with_hf_prompts(vllm_backend: VLLMBackend) -> None:
    replies = vllm_backend.generate(CHATS, SamplingParams(max_new_tokens=24, temperature=0.0))
    for chat, reply in zip(CHATS, replies, strict=True):
        assert reply.prompt_token_ids == chat_prompt_ids(vllm_backend.tokenizer, chat)
        assert reply.text.strip() and reply.token_ids
        assert reply.finish_reason in ("stop", "length")
        if reply.finish_reason == "length":
            assert len(reply.token_ids) == 24
        assert vllm_backend.count_tokens(chat) == len(reply.prompt_token_ids)


@needs_vllm
@pytest.mark.slow
def test_vllm_seeded_sampling_and_stop_strings(vllm_backend: VLLMBackend) -> None:
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3)
    first = vllm_backend.generate([CHATS[0]] * 3, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in vllm_backend.generate([CHATS[0]] * 3, params)]
    assert len({tuple(g.token_ids) for g in first}) > 1  # per-request seeds differ
    counted = vllm_backend.generate([CHATS[2]], SamplingParams(max_new_tokens=48, temperature=0.0, stop=(",",)))[0]
    assert counted.finish_reason == "stop" and "," not in counted.text
