"""`python -m agents.play --backend vllm` end to end on vLLM's CPU build (`make test-vllm`): multi-turn
games stored as with the HF backend, greedy replies token for token the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experience_store import ExperienceStore

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def play(backend: str, store: Path) -> list[tuple]:
    """Three greedy sokoban games of up to 3 turns; each episode's (task, replies, reply token ids, actions)."""
    args = ["--env", "sokoban", "--env-args", "max_turns=3", "--episodes", "3", "--temperature", "0",
            "--max-new-tokens", "24", "--store", str(store), "--backend", backend]
    result = subprocess.run([sys.executable, "-m", "agents.play", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with ExperienceStore.open(store, readonly=True) as s:
        episodes = sorted(s.episodes(), key=lambda e: e.task_id)
    return [(e.task_id, [(t.reply, t.reply_token_ids, t.action) for t in e.turns]) for e in episodes]


def test_play_with_vllm_stores_the_hf_backends_games(tmp_path: Path) -> None:
    games = play("vllm", tmp_path / "vllm.db")
    assert len(games) == 3 and sum(len(turns) for _, turns in games) > 3  # games of several turns
    assert games == play("hf", tmp_path / "hf.db")
