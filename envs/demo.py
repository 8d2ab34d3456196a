"""Play a few episodes of every env with scripted policies and print a table.

The placeholder main job until the agent and the distillation loop exist: it shows that every env
resets, steps, rewards and reports success. Two policies: ``reference`` plays the env's own solution
(walkthrough, solver path or gold answer), ``random`` picks uniformly among the admissible actions (or
sends a blank guess where the game has none).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import envs
from envs.base import TextEnv

ChooseAction = Callable[[dict[str, Any]], str]
Policy = Callable[[TextEnv, np.random.Generator], ChooseAction]  # called once per episode, after reset


def reference_policy(env: TextEnv, rng: np.random.Generator) -> ChooseAction:
    plan = iter(env.reference_solution())
    return lambda info: next(plan, "")


def random_policy(env: TextEnv, rng: np.random.Generator) -> ChooseAction:
    def choose(info: dict[str, Any]) -> str:
        admissible = info.get("admissible_actions") or [""]
        return str(admissible[rng.integers(len(admissible))])

    return choose


def play(env: TextEnv, policy: Policy, split: str, index: int, rng: np.random.Generator) -> dict[str, Any]:
    """Play one episode of task ``index`` of ``split``; return its success, return and steps."""
    _, info = env.reset(options={"split": split, "index": index})
    choose = policy(env, rng)
    steps, total, done = 0, 0.0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(choose(info))
        steps, total, done = steps + 1, total + reward, terminated or truncated
    return {"success": info["success"], "return": total, "steps": steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="episodes per env and policy")
    parser.add_argument("--split", default="validation", choices=envs.SPLITS)
    parser.add_argument("--env", action="append", help="env name (repeatable); default: every registered env")
    args = parser.parse_args(argv)

    console = Console()
    table = Table(title=f"Scripted policies, {args.episodes} {args.split} episodes each")
    for column in ("env", "policy", "success", "mean return", "mean steps", "steps/s"):
        table.add_column(column, justify="left" if column in ("env", "policy") else "right")
    for name in args.env or envs.names():
        with console.status(f"playing {name} (TextWorld compiles each new game once)..."):
            env = envs.make(name)
            for policy_name, policy in (("reference", reference_policy), ("random", random_policy)):
                rng = np.random.default_rng(0)
                start = time.perf_counter()
                size = env.split_sizes[args.split]
                results = [play(env, policy, args.split, i % size, rng) for i in range(args.episodes)]
                elapsed = time.perf_counter() - start
                steps = sum(r["steps"] for r in results)
                table.add_row(
                    name,
                    policy_name,
                    f"{sum(r['success'] for r in results)}/{len(results)}",
                    f"{np.mean([r['return'] for r in results]):.2f}",
                    f"{steps / len(results):.1f}",
                    f"{steps / elapsed:,.0f}",
                )
            env.close()
    console.print(table)


if __name__ == "__main__":
    main()
