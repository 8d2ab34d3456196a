"""The evaluation cache (agents.evaluate.EvalCache) and distill's key for the start model's evaluations
(runs sharing them: test_run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agents.agent import Context
from agents.evaluate import EvalCache, Evaluation, PassRate
from distill.config import DistillConfig
from distill.eval_cache import evaluation_key


def test_key_ignores_seed_method_and_steps_but_not_context_tasks_or_weights(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"a")
    config, context = DistillConfig(env="math", model=str(folder)), Context("Check your arithmetic.")
    evaluation = Evaluation("math", "test", 40, context)
    key = evaluation_key(config, evaluation)
    same = dataclasses.replace(config, seed=3, method="offpolicy", steps=7, teacher_mode="live")
    assert key == evaluation_key(same, evaluation)
    assert key != evaluation_key(config, dataclasses.replace(evaluation, split="validation"))
    assert key != evaluation_key(config, dataclasses.replace(evaluation, tasks=5))
    assert key != evaluation_key(config, dataclasses.replace(evaluation, context=None))
    assert key != evaluation_key(config, dataclasses.replace(evaluation, context=Context("Check your arithmetic twice.")))
    assert key != evaluation_key(config, dataclasses.replace(evaluation, context=Context("Check your arithmetic.", kind="traces")))
    assert key != evaluation_key(dataclasses.replace(config, max_prompt_tokens=512), evaluation)
    (folder / "weights.bin").write_bytes(b"other weights")  # the same path, new weights
    assert key != evaluation_key(config, evaluation)


def test_cache_file_round_trip_and_a_corrupt_line_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = EvalCache(path)
    assert cache.get("k") is None
    half = PassRate(1, 2, {"a": True, "b": False})
    assert cache.lookup("k", lambda: half) == (half, False)
    cache.put("j", PassRate(0, 2, {"a": False, "b": False}), 1.25)
    again = EvalCache(path)
    assert again.lookup("k", lambda: pytest.fail("measured twice")) == (half, True)
    assert again.get("k").outcomes == half.outcomes and again.seconds("j") == 1.2 and again.seconds("x") == 0.0
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k", "j"]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="cache.jsonl:3: not an evaluation result"):
        cache.get("k")


def test_reads_results_written_before_outcomes_were_kept(tmp_path: Path) -> None:
    """docs/context_gap.jsonl's first lines hold counts and seconds only."""
    path = tmp_path / "gap.jsonl"
    path.write_text(json.dumps({"key": "m|math|-|validation|20|128", "successes": 8, "n": 20, "seconds": 76.1}) + "\n")
    cache = EvalCache(path)
    assert cache.get("m|math|-|validation|20|128") == PassRate(8, 20) and cache.seconds("m|math|-|validation|20|128") == 76.1
