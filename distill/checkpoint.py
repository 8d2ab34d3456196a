"""Checkpoints in Hugging Face format that ``agents.play --model <folder>`` loads, plus resumable state.

Layout under ``out_dir``::

    checkpoints/step-000010/          LoRA adapter (or the full model) + tokenizer + trainer_state.pt
    checkpoints/step-000010/merged/   the LoRA-merged model, a plain Hugging Face folder (--merge-lora)
    latest                            the name of the newest complete checkpoint

A checkpoint is built in a temporary folder and renamed into place, and ``latest`` is replaced
atomically, so a run killed at any moment resumes from its last complete checkpoint.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from distill.trainer import Distiller
from envs.cache import atomic_path

STATE_FILE = "trainer_state.pt"


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
    latest = Path(out_dir) / "latest"
    tmp = latest.with_name("latest.tmp")
    tmp.write_text(target.name)
    os.replace(tmp, latest)
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
