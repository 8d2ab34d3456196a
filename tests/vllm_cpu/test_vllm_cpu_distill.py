"""OPCD with the student sampled by vLLM's CPU build (`make test-vllm`): after two steps the engine replies
as the trained student does (its LoRA weights synced in), and `distill.run --backend vllm` runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.agent import Context
from agents.llm import SamplingParams
from agents.models import DEFAULT_MODEL, load_model
from agents.records import Message
from agents.vllm_backend import VLLMBackend
from distill.config import DistillConfig
from distill.trainer import Distiller

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

HINT = "Add the ones digits first, carry the ten, then add the tens digits."
PROBES: list[list[Message]] = [
    [{"role": "user", "content": "What is 17 + 25? Answer with the number."}],
    [{"role": "user", "content": "Explain how to add 48 and 36."}],
    [{"role": "user", "content": "Write a short story about the number 7."}],
]
GREEDY = SamplingParams(max_new_tokens=32, temperature=0.0)


def test_two_steps_sync_the_trained_lora_into_vllm(tmp_path: Path) -> None:
    config = DistillConfig(
        env="addition", backend="vllm", episodes_per_step=2, max_new_tokens=16, lr=1e-2, out_dir=tmp_path, seed=0
    )
    student, tokenizer = load_model(DEFAULT_MODEL, dtype="float32", device="cpu")
    distiller = Distiller(config, student, tokenizer, Context(HINT, "knowledge", id="hint"))

    def replies(sampler: VLLMBackend) -> tuple[list[list[int]], list[list[int]]]:
        """Greedy reply token ids: vLLM's with the weights synced into ``sampler``, and HF's of the student."""
        synced, hf = sampler.generate(PROBES, GREEDY), distiller.llm(distiller.student).generate(PROBES, GREEDY)
        return [g.token_ids for g in synced], [g.token_ids for g in hf]

    base, hf_base = replies(distiller.student_sampler(0))
    assert base == hf_base
    for _ in range(2):
        assert distiller.step()["samples"] > 0  # sampled through vLLM
    sampler = distiller.student_sampler(2)
    trained, hf_trained = replies(sampler)
    assert trained == hf_trained and trained != base
    assert [p.name for p in (tmp_path / "vllm-sync").iterdir()] == ["process-0"]  # one folder, overwritten
    sampler.llm.llm_engine.engine_core.shutdown()  # while pytest's output is open: vLLM logs its shutdown


def test_distill_run_with_the_vllm_backend(tmp_path: Path) -> None:
    context, out = tmp_path / "hint.txt", tmp_path / "run"
    context.write_text(HINT)
    args = ["--env", "addition", "--context", str(context), "--backend", "vllm", "--device", "cpu", "--steps", "2",
            "--episodes-per-step", "2", "--max-new-tokens", "16", "--eval-tasks", "2", "--eval-max-new-tokens", "8",
            "--out-dir", str(out)]
    result = subprocess.run([sys.executable, "-m", "distill.run", *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "before" in result.stdout and "after" in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert (out / "latest").read_text() == "step-000002"
