"""VLLMBackend on vLLM's CPU build (`make test-vllm`): HFBackend's replies token for token, seeded
sampling, and LoRA adapters synced in as the trainer does it (one folder, overwritten, a new version)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from agents.hf_backend import HFBackend
from agents.llm import Generation, SamplingParams
from agents.models import DEFAULT_MODEL
from agents.records import Message
from agents.vllm_backend import VLLMBackend

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

CHATS: list[list[Message]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Count from one to twenty in words, separated by commas."}],
    [{"role": "user", "content": "Write a short story about the number 7."}],
]
GREEDY = SamplingParams(max_new_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def engine() -> Iterator[VLLMBackend]:
    """One engine for the module (about a minute to start on 2 cores), float32 like the HF side."""
    backend = VLLMBackend(DEFAULT_MODEL, dtype="float32", enable_lora=True, max_lora_rank=16)
    yield backend
    backend.llm.llm_engine.engine_core.shutdown()  # while pytest's output is open: vLLM logs its shutdown


@pytest.fixture(scope="module")
def hf() -> HFBackend:
    return HFBackend(DEFAULT_MODEL, dtype="float32", device="cpu")


def replies(generations: list[Generation]) -> list[tuple]:
    return [(g.text, g.token_ids, g.prompt_token_ids, g.finish_reason) for g in generations]


def save_random_adapter(hf: HFBackend, folder: Path, seed: int) -> HFBackend:
    """A LoRA on the default model with random (nonzero) B matrices, saved to ``folder``; the same weights
    in an HFBackend."""
    model = get_peft_model(copy.deepcopy(hf.model), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    model.save_pretrained(folder, save_embedding_layers=False)
    return HFBackend.from_model(model.eval(), hf.tokenizer, name="adapted")


def test_greedy_replies_equal_hf(engine: VLLMBackend, hf: HFBackend) -> None:
    assert replies(engine.generate(CHATS, GREEDY)) == replies(hf.generate(CHATS, GREEDY))
    stopped = SamplingParams(max_new_tokens=40, temperature=0.0, stop=(",",))
    assert replies(engine.generate(CHATS, stopped)) == replies(hf.generate(CHATS, stopped))
    assert [engine.count_tokens(c) for c in CHATS] == [hf.count_tokens(c) for c in CHATS]


def test_seeded_sampling_is_reproducible_per_request(engine: VLLMBackend) -> None:
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3)
    first = engine.generate([CHATS[0]] * 3, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in engine.generate([CHATS[0]] * 3, params)]
    assert len({tuple(g.token_ids) for g in first}) > 1  # each request gets its own seed


def test_adapter_sync_follows_the_saved_weights(engine: VLLMBackend, hf: HFBackend, tmp_path: Path) -> None:
    base = replies(engine.generate(CHATS, GREEDY))
    for version, seed in ((1, 0), (2, 1)):  # the trainer's sync: the same folder, overwritten, a new version
        adapted = save_random_adapter(hf, tmp_path / "sync", seed)
        engine.use_adapter(str(tmp_path / "sync"), version)
        synced = replies(engine.generate(CHATS, GREEDY))
        assert synced == replies(adapted.generate(CHATS, GREEDY)) and synced != base
    engine.use_adapter(None, 0)
    assert replies(engine.generate(CHATS, GREEDY)) == base


def test_device_must_be_the_builds() -> None:
    from vllm.platforms import current_platform

    other = "cuda" if current_platform.is_cpu() else "cpu"
    with pytest.raises(ValueError, match=f"this vLLM build runs on {current_platform.device_type} .* got '{other}'"):
        VLLMBackend(DEFAULT_MODEL, device=other)
