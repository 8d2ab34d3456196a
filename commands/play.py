"""Play an env with an LLM agent (or at the keyboard) and store every episode.

    python -m agents.play --env textworld --episodes 8 --store exp.db
    python -m agents.play --env math --eval --split test --context knowledge.txt
    python -m agents.play --env frozenlake --human

A composition root above the layers: it wires the env, model, agent (``agents.play`` plays and shows
the episodes) and the experience store together; ``python -m agents.play`` runs it.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

import envs
from agents.agent import Agent, Context, context_from_file, env_context
from agents.llm import SamplingParams, load_llm
from agents.models import DEFAULT_MODEL, ModelNotFound, resolve_device, resolve_model
from agents.play import console, evaluate_contexts, play_human, play_with_model
from agents.records import Episode
from common.cli import one_line_errors
from experience_store import ExperienceStore, StoreError
from experience_store.knowledge import knowledge_text

errors = Console(stderr=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agents.play", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="textworld", help=f"env name or Gymnasium id ({', '.join(envs.names())})")
    parser.add_argument(
        "--env-args", nargs="*", default=[], metavar="NAME=VALUE", help="the env's constructor arguments, e.g. max_steps=10"
    )
    parser.add_argument(
        "--allow-mixed-env-args", action="store_true",
        help="store these episodes even if the store holds this env's episodes played with other --env-args",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="named model, local folder or Hugging Face id")
    parser.add_argument("--episodes", type=int, default=8, help="episodes to play (tasks 0..N-1 of the split)")
    parser.add_argument("--split", default="train", choices=envs.SPLITS)
    parser.add_argument("--store", type=Path, default=Path("exp.db"), help="experience store file (created if missing)")
    context = parser.add_mutually_exclusive_group()
    context.add_argument("--context", type=Path, help="a text file given to the agent as context")
    context.add_argument("--knowledge-from", type=Path, help="use the env's selected knowledge set in this store")
    context.add_argument("--env-context", metavar="NAME", help="a context the env ships (e.g. qa: handbook)")
    parser.add_argument(
        "--context-kind", default="knowledge", choices=["knowledge", "system_prompt", "handbook", "traces"],
        help="how --context is placed: a block after the instructions, or (system_prompt) before them",
    )
    parser.add_argument("--context-heading", help="the context block's heading (default: the context kind's)")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument(
        "--vllm-memory-fraction", type=float, help="with --backend vllm: the fraction of GPU memory it may take (default: vLLM's)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-prompt-tokens", type=int, default=2048, help="history is windowed to fit")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes played in lockstep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round", type=int, default=0, help="the experiential-learning round, for provenance")
    parser.add_argument("--human", action="store_true", help="play at the keyboard instead of a model")
    parser.add_argument(
        "--eval", action="store_true",
        help="report the pass rate on --split (validation or test) with and without the context, and record it",
    )
    return parser.parse_args(argv)


def load_context(args: argparse.Namespace) -> Context | None:
    """The context the flags name, with ``--context-heading`` if given; None for none."""
    context = context_named(args)
    if context is not None and args.context_heading:
        return replace(context, heading=args.context_heading)
    return context


def context_named(args: argparse.Namespace) -> Context | None:
    if args.context:
        return context_from_file(args.context, args.context_kind)
    if args.env_context:
        return env_context(envs.make(args.env), args.env, args.env_context)
    if args.knowledge_from:
        if not args.knowledge_from.is_file():
            raise ValueError(f"store {args.knowledge_from} does not exist")
        with ExperienceStore.open(args.knowledge_from, readonly=True) as store:
            selected = store.selected_knowledge_set(args.env)
        if selected is None:
            raise ValueError(f"{args.knowledge_from} has no selected knowledge set for env {args.env!r}; "
                f"run `python -m experience_store reflect --store {args.knowledge_from} --env {args.env}` first"
            )
        return Context(knowledge_text(selected.items), "knowledge", id=selected.uuid)
    return None


def check_numbers(args: argparse.Namespace) -> None:
    """A one-line ValueError naming the first numeric flag out of its range (NaN and infinity are out of all)."""
    for flag in ("episodes", "batch_size", "max_new_tokens", "max_prompt_tokens"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.round < 0:
        raise ValueError(f"--round must be >= 0, got {args.round}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0 (0 = greedy), got {args.temperature}")
    if not (math.isfinite(args.top_p) and 0 < args.top_p <= 1):
        raise ValueError(f"--top-p must be a finite number in (0, 1], got {args.top_p}")
    if args.vllm_memory_fraction is not None:
        if args.backend != "vllm":
            raise ValueError("--vllm-memory-fraction goes with --backend vllm")
        if not (math.isfinite(args.vllm_memory_fraction) and 0 < args.vllm_memory_fraction <= 1):
            raise ValueError(f"--vllm-memory-fraction must be a finite number in (0, 1], got {args.vllm_memory_fraction}")


def main(argv: list[str] | None = None) -> None:
    """Every flag, the context and the model's name are checked before the store is opened (or created),
    and the store is opened (its writability checked) before the model loads. Ctrl-C exits 130 and says
    how many episodes this run stored."""
    args = parse_args(argv)
    interrupted = "interrupted before the store was opened: nothing was written"
    with one_line_errors((StoreError, ModelNotFound, ValueError, KeyError), interrupted, out=console, err=errors):
        check_numbers(args)
        args.env = envs.spec(args.env).name  # one name per env in the store, whichever alias was typed
        env_args = envs.parse_env_args(args.env_args)
        if env_args:
            envs.configure(args.env, **env_args)
        if args.eval and args.split == "train":
            args.split = "validation"
        sampling = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
        )
        context = None if args.human else load_context(args)
        if not args.human:
            resolve_model(args.model)  # finds the model without loading it: a missing or broken one fails here
            resolve_device(args.device)  # so does a missing GPU
        with ExperienceStore.open(args.store) as store:
            stored_before = store.count_episodes()
            if not args.allow_mixed_env_args:
                store.check_env_args(args.env, env_args)  # before the model loads

            def keep(episode: Episode) -> None:
                episode.env_args = env_args
                # One transaction per episode: Ctrl-C keeps all finished ones.
                store.add_episodes([episode], allow_mixed_settings=args.allow_mixed_env_args)

            try:
                if args.human:
                    play_human(args, keep)
                    return
                with console.status(f"loading {args.model}..."):
                    engine = {} if args.vllm_memory_fraction is None else {"gpu_memory_utilization": args.vllm_memory_fraction}
                    llm = load_llm(args.model, backend=args.backend, dtype=args.dtype, device=args.device, **engine)
                agent = Agent(llm, sampling, context, args.max_prompt_tokens)
                if args.eval:
                    results = evaluate_contexts(args, agent, keep)
                    run_id = store.create_run({"kind": "evaluation", **{k: str(v) for k, v in vars(args).items()}})
                    store.finish_run(run_id, "completed", evaluation=results)
                else:
                    play_with_model(args, agent, keep)
            except KeyboardInterrupt:
                stored = store.count_episodes() - stored_before
                console.print(f"[yellow]interrupted: this run stored {stored} episodes in {store.path}[/]")
                sys.exit(130)


if __name__ == "__main__":
    main()
