"""Data parallelism: two processes (gloo on CPU) holding different numbers of tokens get the gradient and loss of
one process on their union batch; `accelerate launch` runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from transformers import PreTrainedTokenizerBase

from agents.agent import Context
from agents.models import load_model
from distill.config import DistillConfig
from distill.trainer import Distiller, Sample

CONTEXT = Context("Blue is the answer.", "knowledge", id="fact")
# (LoRA rank, reduction): LoRA, and full fine-tuning, whose tied head gets its gradient through the chunked loss.
SETTINGS = [(4, "token_mean"), (0, "sequence_mean")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gradients(model_dir: str, samples: list[Sample]) -> list[tuple[float, list[torch.Tensor]]]:
    """(loss, gradients) of ``Distiller.backward`` on ``samples`` under each of ``SETTINGS``, one pass per sample."""
    results = []
    for lora_r, reduction in SETTINGS:
        student, tokenizer = load_model(model_dir)
        config = DistillConfig(env="qa", model=model_dir, method="sft", lora_r=lora_r, reduction=reduction, max_batch_tokens=1)
        distiller = Distiller(config, student, tokenizer, CONTEXT)
        loss = distiller.backward(samples).loss.item()
        results.append((loss, [p.grad.clone() for p in distiller.trainable]))
    return results


def _worker(rank: int, port: int, model_dir: str, shards: list[list[Sample]], results: dict) -> None:
    os.environ.update(  # what `accelerate launch --cpu` sets; the Distiller's Accelerator joins the group
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    results[rank] = _gradients(model_dir, shards[rank])
    torch.distributed.destroy_process_group()


def reply_samples(tokenizer: PreTrainedTokenizerBase, replies: list[str]) -> list[Sample]:
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    user = [{"role": "user", "content": "What colour?"}]
    return [Sample(user, [{"role": "system", "content": CONTEXT.text}, *user], encode(reply)) for reply in replies]


def test_processes_with_uneven_batches_get_the_union_batchs_gradient(
    tiny_model_dir: str, default_tokenizer: PreTrainedTokenizerBase
) -> None:
    shards = [
        reply_samples(default_tokenizer, [" blue"]),  # 1 row, 1 token
        reply_samples(default_tokenizer, [" it is blue, surely", " blue sky", " a deep and quiet blue"]),  # 3 rows, many
    ]
    assert len({sum(len(s.reply_ids) for s in shard) for shard in shards}) == 2
    results: Any = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), tiny_model_dir, shards, results), nprocs=2, join=True)
    expected = _gradients(tiny_model_dir, shards[0] + shards[1])  # one process, the union batch
    for (loss, grads), per_rank in zip(expected, zip(results[0], results[1])):
        for rank_loss, rank_grads in per_rank:
            assert rank_loss == pytest.approx(loss, rel=1e-5)
            # Relative to each tensor's norm: threads sum in another order than one process does.
            assert all((g - e).norm() <= 1e-4 * e.norm() + 1e-9 for g, e in zip(rank_grads, grads))
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tiny_model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "-m", "distill.run",
        "--env", "qa", "--env-context", "handbook", "--model", tiny_model_dir, "--out-dir", str(out),
        "--steps", "2", "--episodes-per-step", "2", "--max-new-tokens", "4", "--eval-tasks", "2",
        "--eval-max-new-tokens", "3", "--eval-every", "0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "latest").read_text() == "step-000002"
    train = [line for line in (out / "metrics.jsonl").read_text().splitlines() if "train/loss" in line]
    assert len(train) == 2  # one process records
