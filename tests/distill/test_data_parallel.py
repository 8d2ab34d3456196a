"""Data parallelism: gradients are averaged across processes (gloo on CPU), and `accelerate launch` runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distill.trainer import _average_gradients


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    weight = torch.nn.Parameter(torch.zeros(3))
    no_grad_yet = torch.nn.Parameter(torch.zeros(2))  # a parameter this rank did not touch
    (weight * torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)).sum().backward()
    _average_gradients([weight, no_grad_yet])
    results[rank] = (weight.grad.tolist(), no_grad_yet.grad.tolist())
    dist.destroy_process_group()


def test_gradients_are_averaged_across_processes() -> None:
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    expected = [1.5, 3.0, 4.5]  # mean of rank 0's [1, 2, 3] and rank 1's [2, 4, 6]
    assert results[0] == results[1] == (expected, [0.0, 0.0])


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
