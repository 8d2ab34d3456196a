"""Shared test setup: a per-session cache folder (tests never write to the user's cache) and tiny models.

- ``default_tokenizer`` (session): the default model's tokenizer (ChatML template, pad = eos =
  ``<|im_end|>``, left padding), read from the default GGUF (a few seconds, once per session).
- ``tiny_llama`` (session): a randomly initialised 2-layer Llama (hidden 32) with the default tokenizer's
  vocabulary, float32, CPU, eval mode, seeded. Shared: a test that changes it works on a ``copy.deepcopy``.
- ``tiny_backend``: ``HFBackend.from_model(tiny_llama, default_tokenizer, name="tiny-llama")``.
- ``tiny_model_dir`` (session): ``tiny_llama`` saved as a folder, a model name every CLI accepts.
- ``writer_dir`` (session): a one-layer Llama folder whose weights are set by hand to a bigram chain:
  whatever the conversation, it writes ``tiny_models.WRITER_LINE`` (a knowledge item) and ends its turn. Reflect and
  the loop run on it through the real backend, resolver and CLIs.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from agents.hf_backend import HFBackend
from agents.models import DEFAULT_MODEL, load_tokenizer
from tiny_models import WRITER_LINE, bigram_writer

settings.register_profile("default", deadline=None, max_examples=60, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    if "OPCD_TEST_CACHE_DIR" in os.environ:  # reuse compiled games across local runs
        os.environ["OPCD_CACHE_DIR"] = os.environ["OPCD_TEST_CACHE_DIR"]
    else:
        os.environ["OPCD_CACHE_DIR"] = str(tmp_path_factory.mktemp("opcd-cache"))


@pytest.fixture(scope="session")
def default_tokenizer(_session_cache: None) -> PreTrainedTokenizerBase:
    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_llama(default_tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(default_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.5,  # peaked logits: greedy choices have clear margins, as in a trained model
        tie_word_embeddings=True,
        bos_token_id=default_tokenizer.bos_token_id,
        eos_token_id=default_tokenizer.eos_token_id,
        pad_token_id=default_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_backend(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase) -> HFBackend:
    return HFBackend.from_model(tiny_llama, default_tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase, tmp_path_factory) -> str:
    """``tiny_llama`` saved as a Hugging Face folder: a model name every CLI accepts."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.save_pretrained(folder)
    default_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def writer_dir(default_tokenizer: PreTrainedTokenizerBase, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("writer")
    bigram_writer(default_tokenizer, WRITER_LINE).save_pretrained(folder)
    default_tokenizer.save_pretrained(folder)
    return str(folder)
