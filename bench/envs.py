"""Environment benchmark: reset/step throughput, the math checker's speed and worst case, TextWorld caching.

Run: ``python -m bench.envs`` (``--quick`` for fewer repetitions). Prints one table per figure group.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import envs
from envs.math_check import answers_match
from envs.textworld_env import DIFFICULTIES, generate_game



def typical_answers(n: int) -> list[tuple[str, str]]:
    """``n`` distinct (candidate, gold) pairs of the kinds models write: no two alike, so no cache hits."""
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        a, b = int(rng.integers(1, 10_000)), int(rng.integers(2, 97))
        pairs += [
            (str(a + i), str(a + i)),
            (f"{a}/{b}", f"{a / b:.12f}"),
            (f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}"),
            (f"{a + i:,}", str(a + i)),
            (f"${a}.50", f"{a}.5"),
            (f"{b}%", f"{b / 100}"),
            (f"x = {a - i}", str(a - i)),
            (f"{a}*x + {b}", f"{b} + {a}*x"),
            (f"({a}, {b})", f"({a}, {b + 1})"),
        ]
    return pairs[:n]


ADVERSARIAL_ANSWERS: dict[str, str] = {
    "power tower 9**9**9**9": "9**9**9**9",
    "__import__ trick": "__import__('os').system('echo pwned')",
    "dunder walk": "().__class__.__bases__[0].__subclasses__()",
    "10 MB of digits": "9" * 10_000_000,
    "deep parentheses": "(" * 100_000 + "1" + ")" * 100_000,
    "huge factorial": "factorial(10**9)",
    "latex bomb": "\\frac{" * 5_000 + "1" + "}{2}" * 5_000,
}


def env_throughput(name: str, episodes: int) -> tuple[float, float]:
    """Resets/s and steps/s with random admissible actions on validation tasks (games pre-generated)."""
    env = envs.make(name)
    rng = np.random.default_rng(0)
    size = env.split_sizes["validation"]
    for i in range(min(episodes, size)):  # warm: generate/compile every task once
        env.reset(options={"split": "validation", "index": i})
    reset_time = step_time = 0.0
    steps = 0
    for episode in range(episodes):
        start = time.perf_counter()
        _, info = env.reset(options={"split": "validation", "index": episode % size})
        reset_time += time.perf_counter() - start
        done = False
        while not done:
            admissible = info.get("admissible_actions") or ["look"]
            action = str(admissible[rng.integers(len(admissible))])
            start = time.perf_counter()
            _, _, terminated, truncated, info = env.step(action)
            step_time += time.perf_counter() - start
            steps += 1
            done = terminated or truncated
    env.close()
    return episodes / reset_time, steps / step_time


def checker_throughput(n: int) -> float:
    """Checks per second on ``n`` distinct typical answers, one thread."""
    pairs = typical_answers(n)
    start = time.perf_counter()
    for candidate, gold in pairs:
        answers_match(candidate, gold)
    return n / (time.perf_counter() - start)


def adversarial_times() -> dict[str, tuple[float, bool, float]]:
    """Per adversarial input: seconds on the main thread, the verdict, seconds on a worker thread."""
    results = {}
    for label, answer in ADVERSARIAL_ANSWERS.items():
        start = time.perf_counter()
        verdict = answers_match(answer, "42")
        main_s = time.perf_counter() - start
        box: list[float] = []

        def run(answer: str = answer) -> None:
            t0 = time.perf_counter()
            answers_match(answer, "43")  # another gold: no cached verdict from the main-thread call
            box.append(time.perf_counter() - t0)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        results[label] = (main_s, verdict, box[0])
    return results


def textworld_generation(repeats: int) -> dict[str, tuple[float, float]]:
    """Per difficulty: median seconds to generate a game cold (empty cache) and to fetch it cached."""
    results = {}
    for difficulty in DIFFICULTIES:
        cold, warm = [], []
        for seed in range(repeats):
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                generate_game(seed, difficulty, Path(cache))
                cold.append(time.perf_counter() - start)
                start = time.perf_counter()
                generate_game(seed, difficulty, Path(cache))
                warm.append(time.perf_counter() - start)
        results[difficulty] = (statistics.median(cold), statistics.median(warm))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    console = Console()

    table = Table(title="Env throughput (validation tasks, random admissible actions)")
    for column in ("env", "resets/s", "steps/s"):
        table.add_column(column, justify="right")
    for name in envs.names():
        resets, steps = env_throughput(name, 10 if args.quick or name == "textworld" else 200)
        table.add_row(name, f"{resets:,.0f}", f"{steps:,.0f}")
    console.print(table)

    rate = checker_throughput(2_000 if args.quick else 20_000)
    console.print(f"Math checker on typical answers: [bold]{rate:,.0f} checks/s[/] (one core; target >= 1,000)")
    table = Table(title="Math checker on adversarial answers (target < 1 s each, verdict False)")
    for column in ("input", "main thread ms", "worker thread ms", "verdict"):
        table.add_column(column, justify="right")
    for label, (main_s, verdict, thread_s) in adversarial_times().items():
        table.add_row(label, f"{1000 * main_s:.2f}", f"{1000 * thread_s:.2f}", str(verdict))
    console.print(table)

    table = Table(title="TextWorld game generation (median; cached target < 0.5 s)")
    for column in ("difficulty", "cold s", "cached ms"):
        table.add_column(column, justify="right")
    for difficulty, (cold, warm) in textworld_generation(1 if args.quick else 3).items():
        table.add_row(difficulty, f"{cold:.2f}", f"{1000 * warm:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
