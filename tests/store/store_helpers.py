"""Store test helpers: deterministic episodes, and writer processes for the concurrency and crash tests.

As a script (the tests start it in a subprocess)::

    python store_helpers.py append STORE TAG BATCHES SIZE    # commit BATCHES batches of SIZE episodes
    python store_helpers.py crash STORE BATCHES SIZE READY   # commit, then write forever inside one open
                                                             # transaction, touching READY once inside it
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from agents.records import Episode, Turn  # noqa: E402
from experience_store import ExperienceStore  # noqa: E402

SYSTEM = "You solve arithmetic tasks. Think briefly, then end with 'Answer: <number>'. " * 4


def episode_uuid(tag: str, i: int) -> str:
    return hashlib.md5(f"{tag}/{i}".encode()).hexdigest()


def make_episode(
    tag: str,
    i: int,
    *,
    turns: int = 3,
    env: str = "opcd/Math-v0",
    split: str = "train",
    model: str = "tiny-model",
    round: int = 0,
    created_at: float = 1_700_000_000.0,
    env_args: dict[str, object] | None = None,
) -> Episode:
    """A realistic multi-turn episode (growing chat history), fully determined by ``tag`` and ``i``."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Task {tag}-{i}: {i} + 1 = ?"}]
    played = []
    success = i % 3 == 0
    for k in range(turns):
        last = k == turns - 1
        reply = f"Let me think about step {k}. Answer: {i + k}"
        observation = ("Correct!" if success else "Out of attempts.") if last else f"Wrong ({k}), try again."
        reward = 1.0 if last and success else 0.0
        token_ids = [(i * 7 + k * 13 + n) % 49_152 for n in range(9)] if i % 2 else []  # some without ids
        played.append(Turn(k, list(messages), reply, str(i + k), reward, observation, 60 + 12 * k, 9, token_ids))
        messages = messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": observation}]
    return Episode(
        env_id=env,
        task_id=f"{tag}-{i}",
        split=split,
        model=model,
        turns=played,
        success=success,
        total_reward=1.0 if success else 0.0,
        context_id=None if i % 2 else f"set-{tag}",
        round=round,
        seed=i if i % 4 else None,
        wall_time_s=0.25 * turns,
        metadata={"tag": tag, "i": i, "notes": ["ünïcode ✓", None]},
        env_args={"levels": [1, 2], "max_turns": 5} if env_args is None else env_args,
        uuid=episode_uuid(tag, i),
        created_at=created_at + i,
    )


def digest(path: Path) -> str:
    """The file's content hash, to prove that a failed operation did not write to it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_batch(tag: str, size: int, **kwargs: object) -> list[Episode]:
    return [make_episode(tag, i, **kwargs) for i in range(size)]  # type: ignore[arg-type]


def _append(store_path: str, tag: str, batches: int, size: int) -> None:
    with ExperienceStore.open(store_path, timeout=60) as store:
        for b in range(batches):
            store.add_episodes(make_batch(f"{tag}.{b}", size))


def _crash(store_path: str, batches: int, size: int, ready: str) -> None:
    with ExperienceStore.open(store_path, timeout=60) as store:
        for b in range(batches):
            store.add_episodes(make_batch(f"committed.{b}", size))
        with store.transaction():
            store.add_episodes(make_batch("doomed.0", size * 4, turns=8))
            Path(ready).touch()  # the parent kills us from here on: mid-transaction, mid-writes
            for n in range(1, 10**9):
                store.add_episodes(make_batch(f"doomed.{n}", size * 4, turns=8))


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "append":
        _append(rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif mode == "crash":
        _crash(rest[0], int(rest[1]), int(rest[2]), rest[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
