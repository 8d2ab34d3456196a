"""distill.eval_cache: the start model's evaluation is looked up by what it depends on (runs sharing it: test_run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agents.agent import Context
from distill.config import DistillConfig
from distill.eval_cache import EvalCache, evaluation_key


def test_key_ignores_seed_method_and_steps_but_not_context_tasks_or_weights(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"a")
    config, context = DistillConfig(env="math", model=str(folder)), Context("Check your arithmetic.")
    key = evaluation_key(config, context, "test")
    same = dataclasses.replace(config, seed=3, method="offpolicy", steps=7, teacher_mode="live")
    assert key == evaluation_key(same, context, "test")
    assert key != evaluation_key(config, context, "validation")
    assert key != evaluation_key(dataclasses.replace(config, eval_tasks=5), context, "test")
    assert key != evaluation_key(config, Context("Check your arithmetic twice."), "test")
    assert key != evaluation_key(config, Context("Check your arithmetic.", kind="traces"), "test")
    (folder / "weights.bin").write_bytes(b"other weights")  # the same path, new weights
    assert key != evaluation_key(config, context, "test")


def test_cache_file_round_trip_and_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    cache = EvalCache(tmp_path / "cache.json")
    assert cache.get("k") is None
    cache.put("k", {"student": {"rate": 0.5, "successes": 1, "n": 2}})
    cache.put("j", {"student": {"rate": 0.0, "successes": 0, "n": 2}})
    assert EvalCache(tmp_path / "cache.json").get("k") == {"student": {"rate": 0.5, "successes": 1, "n": 2}}
    (tmp_path / "cache.json").write_text("{not json")
    with pytest.raises(ValueError, match="cache.json is not valid JSON"):
        cache.get("k")
