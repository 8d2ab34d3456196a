"""Fixtures for the store tests: a store path in a temp folder, and a populated store."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import make_batch

from experience_store import DistillRun, ExperienceStore, KnowledgeItem, KnowledgeSet


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "exp.db"


@pytest.fixture
def populated(store_path: Path) -> Path:
    """A closed store with episodes of two envs and splits, knowledge, and a finished run."""
    with ExperienceStore.open(store_path) as store:
        store.add_episodes(make_batch("math-train", 12))
        store.add_episodes(make_batch("math-val", 6, split="validation", round=1))
        store.add_episodes(make_batch("grid", 5, env="opcd/FrozenLake-v0", model="other-model", turns=5))
        sources = [e.uuid for e in make_batch("math-train", 2)]
        env, model = "opcd/Math-v0", "tiny-model"
        items = [
            KnowledgeItem("Check the arithmetic first.", env_id=env, model=model, source_episodes=sources),
            KnowledgeItem("Answer in the requested format.", env_id=env, model=model, round=1),
        ]
        store.add_knowledge_set(KnowledgeSet("opcd/Math-v0", items, token_count=17, selected=True))
        run = DistillRun({"lr": 1e-5, "knowledge_set": "x"}, metrics={"losses/kl": [(0, 0.9), (10, 0.4)]})
        store.add_run(run)
        store.finish_run(run.uuid, "completed", "ckpt/step-10", {"pass_rate": 0.5})
    return store_path
