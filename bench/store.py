"""Experience store benchmark: insert throughput, filtered-query latency, bytes per episode, JSONL speed.

Run: ``python -m bench.store`` (``--episodes N``, ``--batch B``). Builds a store of synthetic but
realistically sized episodes (5 turns, a growing chat history, a 1 KB system prompt) in a temporary
folder, and prints one compact table. Target: at least 2,000 episodes/s inserted in batches.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agents.records import Episode, Turn
from experience_store import ExperienceStore
from experience_store.jsonl import export_jsonl, import_jsonl

ENVS = ("opcd/TextWorld-v0", "opcd/Math-v0", "opcd/FrozenLake-v0", "opcd/Sokoban-v0")
SPLITS = ("train", "train", "train", "validation", "test")
MODELS = ("smollm2-135m", "Qwen/Qwen3-1.7B")
START = 1_760_000_000.0  # episodes spread over 30 days from here
DAY = 86_400.0


def make_episodes(n: int, turns: int = 5, seed: int = 0) -> list[Episode]:
    """``n`` episodes sized like real ones: each turn's prompt repeats the system message and the history,
    and keeps the reply's 40 token ids."""
    rng = random.Random(seed)
    words = "the a key door room north south east west take open go box chest lamp table is you see".split()

    def text(n_words: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n_words))

    system = {"role": "system", "content": "You are playing a text game. " + text(200)}
    episodes = []
    for i in range(n):
        messages = [system, {"role": "user", "content": text(60)}]
        played = []
        for k in range(turns):
            reply = f"{text(25)}\nAction: go north"
            observation = text(rng.randint(30, 80))
            reward, token_ids = float(k == turns - 1), [rng.randrange(49_152) for _ in range(40)]
            played.append(Turn(k, list(messages), reply, "go north", reward, observation, 400 + 110 * k, 40, token_ids))
            messages = messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": observation}]
        episodes.append(
            Episode(
                env_id=ENVS[i % len(ENVS)],
                task_id=str(rng.randrange(1000)),
                split=rng.choice(SPLITS),
                model=MODELS[i % 7 == 0],
                turns=played,
                success=rng.random() < 0.3,
                total_reward=1.0,
                round=i * 3 // n,
                seed=i,
                wall_time_s=rng.uniform(1, 5),
                metadata={"task_index": i},
                created_at=START + 30 * DAY * i / n,
            )
        )
    return episodes


def timed(fn: Callable[[], object], repeats: int = 1) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000, help="episodes in the store (default %(default)s)")
    parser.add_argument("--batch", type=int, default=100, help="episodes per add_episodes call (default %(default)s)")
    args = parser.parse_args(argv)
    console = Console()
    episodes = make_episodes(args.episodes)
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "exp.db"
        with ExperienceStore.open(path) as store:
            start = time.perf_counter()
            for i in range(0, len(episodes), args.batch):
                store.add_episodes(episodes[i : i + args.batch])
            seconds = time.perf_counter() - start
            rows.append(("insert", f"{len(episodes) / seconds:,.0f} episodes/s", f"batches of {args.batch}, 5 turns"))
            singles = make_episodes(300, seed=1)
            one_each = timed(lambda: [store.add_episodes([e]) for e in singles])
            rows.append(("insert, one per call", f"{len(singles) / one_each:,.0f} episodes/s", "a commit (fsync) each"))

            env, some = ENVS[1], episodes[len(episodes) // 2]
            wins = {"env": env, "split": "validation", "success": True}
            day = {"since": START + 10 * DAY, "until": START + 11 * DAY}
            queries: list[tuple[str, Callable[[], object]]] = [
                ("env+split+success, first 100", lambda: list(store.episodes(**wins, limit=100))),
                ("model+round, count", lambda: store.count_episodes(model=MODELS[1], round=2)),
                ("one day (since/until), count", lambda: store.count_episodes(**day)),
                ("one day (since/until), all", lambda: list(store.episodes(**day))),
                ("episode by uuid", lambda: store.episode(some.uuid)),
                ("episode by 8-char prefix", lambda: store.episode(some.uuid[:8])),
            ]
            for label, query in queries:
                rows.append((f"query: {label}", f"{timed(query, repeats=20) * 1e3:.2f} ms", "median of 20"))
            train = store.count_episodes(env=env, split="train")
            scan = timed(lambda: sum(1 for _ in store.episodes(env=env, split="train")))
            rows.append(("scan: one env's train episodes", f"{train / scan:,.0f} episodes/s", f"{train:,} episodes"))
            total = store.count_episodes()

        store_bytes = path.stat().st_size  # checkpointed on close: the WAL is folded in
        rows.append(("size", f"{store_bytes / total:,.0f} bytes/episode", f"{store_bytes / 1e6:,.1f} MB for {total:,}"))

        dump = Path(folder) / "dump.jsonl"
        seconds = timed(lambda: export_jsonl(path, dump))
        size = dump.stat().st_size
        note = f"{size / 1e6 / seconds:,.0f} MB/s, {size / total:,.0f} bytes/episode"
        rows.append(("export JSONL", f"{total / seconds:,.0f} episodes/s", note))
        seconds = timed(lambda: import_jsonl(dump, Path(folder) / "imported.db"))
        rows.append(("import JSONL", f"{total / seconds:,.0f} episodes/s", "validate every line, then one transaction"))

    table = Table(title=f"Experience store, {args.episodes:,} episodes of 5 turns")
    for column in ("measure", "value", "note"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
