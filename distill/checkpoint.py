"""Checkpoints in Hugging Face format that ``agents.play --model <folder>`` loads, plus resumable state.

Layout under ``out_dir``::

    checkpoints/step-000010/          LoRA adapter (or the full model) + tokenizer + trainer_state.pt + run.json
    checkpoints/step-000010/merged/   the LoRA-merged model, a plain Hugging Face folder (--merge-lora)
    latest                            the name of the newest complete checkpoint

A checkpoint is built in a temporary folder and renamed into place, and ``latest`` is replaced
atomically, so a run killed at any moment resumes from its last complete checkpoint.

``run.json`` records the run's whole config and its context's identity (kind and SHA-256 of the text):
``resume_point`` refuses to continue a run under other settings, except those in ``MAY_CHANGE``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from agents.agent import Context
from common.files import atomic_path, write_text_atomic
from distill.config import DistillConfig
from distill.trainer import Distiller

STATE_FILE = "trainer_state.pt"
RUN_FILE = "run.json"

# Settings a resumed run may change. They decide only how long it runs (a larger --steps continues it: the
# learning rate is constant), when it evaluates on the monitoring split or saves, where its files go, and
# in what pieces the same computation runs (chunk and batch sizes: float rounding only). Every other field
# decides what is trained or what the before/after table compares.
MAY_CHANGE = frozenset({
    "steps", "eval_every", "monitor_split", "save_every", "eval_cache", "merge_lora", "out_dir",
    "loss_chunk_size", "max_batch_tokens", "eval_batch_size", "vllm_memory_fraction",
})  # fmt: skip


def save_checkpoint(distiller: Distiller, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Save weights, tokenizer, optimizer, step and random state; return the checkpoint folder."""
    target = Path(out_dir) / "checkpoints" / f"step-{distiller.step_count:06d}"
    model = distiller.student
    with atomic_path(target) as build:
        if isinstance(model, PeftModel):
            model.peft_config["default"].base_model_name_or_path = distiller.config.model  # a name, not a cache path
            model.save_pretrained(build, save_embedding_layers=False)  # LoRA leaves embeddings alone
            if distiller.config.merge_lora:
                copy.deepcopy(model).merge_and_unload().save_pretrained(build / "merged")
                distiller.tokenizer.save_pretrained(build / "merged")
        else:
            model.save_pretrained(build)
        distiller.tokenizer.save_pretrained(build)
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        state = {"step": distiller.step_count, "optimizer": distiller.optimizer.state_dict(), "rng": rng}
        torch.save({**state, "extra": extra or {}}, build / STATE_FILE)
        run = {"step": distiller.step_count, "config": distiller.config.to_dict()}
        run["context"] = context_identity(distiller.context)
        (build / RUN_FILE).write_text(json.dumps(run, indent=1), encoding="utf-8")
    write_text_atomic(Path(out_dir) / "latest", target.name)
    return target


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``out_dir``, or None."""
    latest = Path(out_dir) / "latest"
    if not latest.is_file():
        return None
    folder = Path(out_dir) / "checkpoints" / latest.read_text().strip()
    return folder if (folder / STATE_FILE).is_file() else None


def load_checkpoint(distiller: Distiller, folder: Path) -> dict[str, Any]:
    """Restore weights, optimizer, step and random state from ``folder``; return its ``extra`` dict."""
    model = distiller.student
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        weights: dict[str, torch.Tensor] = {}
        for shard in sorted(folder.glob("model*.safetensors")):
            weights.update(load_file(str(shard)))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied head is saved once
            raise ValueError(f"checkpoint {folder} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    state = torch.load(folder / STATE_FILE, weights_only=False)
    distiller.optimizer.load_state_dict(state["optimizer"])
    distiller.step_count = state["step"]
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return state["extra"]


def context_identity(context: Context) -> str:
    """What makes two contexts the same for a run: their kind and (the first 16 hex digits of) the SHA-256 of their text."""
    return f"{context.kind} sha256:{hashlib.sha256(context.text.encode('utf-8')).hexdigest()[:16]}"


def setting_changes(saved: dict[str, Any], current: dict[str, Any], may_change: frozenset[str]) -> list[str]:
    """``--flag OLD -> NEW`` for every setting outside ``may_change`` whose value differs (JSON-compared)."""
    current = json.loads(json.dumps(current))  # tuples and paths as a JSON file holds them
    return [
        f"--{name.replace('_', '-')} {saved.get(name)} -> {current.get(name)}"
        for name in sorted(saved.keys() | current.keys())
        if name not in may_change and saved.get(name) != current.get(name)
    ]


def resume_point(config: DistillConfig, context: Context) -> Path | None:
    """The checkpoint that resuming ``config.out_dir`` continues (None: there is none yet).

    ValueError, in one line naming every difference, when it was made with other settings (``MAY_CHANGE``
    aside), another context, or is past ``config.steps``; the run is then left as it is.
    """
    folder = latest_checkpoint(config.out_dir)
    if folder is None:
        return None
    if not (folder / RUN_FILE).is_file():
        raise ValueError(f"checkpoint {folder} does not record its settings, so resuming cannot check them; "
                         "start a new run in another --out-dir")  # fmt: skip
    run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    changes = setting_changes(run["config"], config.to_dict(), MAY_CHANGE)
    if run["context"] != context_identity(context):
        changes.append(f"context {run['context']} -> {context_identity(context)}")
    if run["step"] > config.steps:
        changes.append(f"--steps {config.steps} is below the checkpoint's step {run['step']}")
    if changes:
        raise ValueError(f"cannot resume {config.out_dir} with other settings: {'; '.join(changes)} "
                         "(resume with the same settings, or start a new run in another --out-dir)")  # fmt: skip
    return folder
