"""Play an env with an LLM agent (or at the keyboard) and store every episode.

    python -m agents.play --env textworld --episodes 8 --store exp.db
    python -m agents.play --env math --eval --split test --context knowledge.txt
    python -m agents.play --env frozenlake --human

A composition root above the layers: it wires the env, model, agent (``agents.play`` plays and shows
the episodes) and the experience store together; ``python -m agents.play`` runs it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

import envs
from agents.agent import Agent, Context, context_from_file, env_context
from agents.llm import SamplingParams, load_llm
from agents.models import ModelNotFound, resolve_device, resolve_model
from agents.play import PlayConfig, console, evaluate_contexts, play_human, play_with_model
from agents.records import Episode
from common.cli import one_line_errors
from common.config import add_arguments, from_arguments
from experience_store import ExperienceStore, StoreError
from experience_store.knowledge import knowledge_text

errors = Console(stderr=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags: ``PlayConfig``'s, and by hand those that are no setting of a play (where episodes are
    stored, the mutually exclusive context sources, keyboard play). A number out of its field's range is
    a usage error; the config's other checks (a ValueError) are ``main``'s."""
    parser = argparse.ArgumentParser(prog="python -m agents.play", description=__doc__.splitlines()[0])
    add_arguments(parser, PlayConfig)
    parser.add_argument("--store", type=Path, default=Path("exp.db"), help="experience store file (created if missing)")
    context = parser.add_mutually_exclusive_group()
    context.add_argument("--context", type=Path, help="a text file given to the agent as context")
    context.add_argument("--knowledge-from", type=Path, help="use the env's selected knowledge set in this store")
    context.add_argument("--env-context", metavar="NAME", help="a context the env ships (e.g. qa: handbook)")
    parser.add_argument("--human", action="store_true", help="play at the keyboard instead of a model")
    return parser.parse_args(argv)


def load_context(args: argparse.Namespace, config: PlayConfig) -> Context | None:
    """The context the flags name, with ``--context-heading`` if given; None for none."""
    context = context_named(args, config)
    if context is not None and config.context_heading:
        return replace(context, heading=config.context_heading)
    return context


def context_named(args: argparse.Namespace, config: PlayConfig) -> Context | None:
    if args.context:
        return context_from_file(args.context, config.context_kind)
    if args.env_context:
        return env_context(envs.make(config.env), config.env, args.env_context)
    if args.knowledge_from:
        if not args.knowledge_from.is_file():
            raise ValueError(f"store {args.knowledge_from} does not exist")
        with ExperienceStore.open(args.knowledge_from, readonly=True) as store:
            selected = store.selected_knowledge_set(config.env)
        if selected is None:
            raise ValueError(f"{args.knowledge_from} has no selected knowledge set for env {config.env!r}; "
                f"run `python -m experience_store reflect --store {args.knowledge_from} --env {config.env}` first"
            )
        return Context(knowledge_text(selected.items), "knowledge", id=selected.uuid)
    return None


def run_settings(args: argparse.Namespace, config: PlayConfig) -> dict[str, str]:
    """An evaluation run's recorded settings: every flag, as text (``--env-args`` as the list typed)."""
    settings = {**vars(args), **vars(config), "env_args": list(config.env_args)}
    return {k: str(v) for k, v in settings.items()}


def main(argv: list[str] | None = None) -> None:
    """Every flag, the context and the model's name are checked before the store is opened (or created),
    and the store is opened (its writability checked) before the model loads. Ctrl-C exits 130 and says
    how many episodes this run stored."""
    args = parse_args(argv)
    interrupted = "interrupted before the store was opened: nothing was written"
    with one_line_errors((StoreError, ModelNotFound, ValueError, KeyError), interrupted, out=console, err=errors):
        config = from_arguments(args, PlayConfig)
        env_args = envs.parse_env_args(config.env_args)
        if env_args:
            envs.configure(config.env, **env_args)
        sampling = SamplingParams(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p, seed=config.seed
        )
        context = None if args.human else load_context(args, config)
        if not args.human:
            resolve_model(config.model)  # finds the model without loading it: a missing or broken one fails here
            resolve_device(config.device)  # so does a missing GPU
        with ExperienceStore.open(args.store) as store:
            stored_before = store.count_episodes()
            if not config.allow_mixed_env_args:
                store.check_env_args(config.env, env_args)  # before the model loads

            def keep(episode: Episode) -> None:
                episode.env_args = env_args
                # One transaction per episode: Ctrl-C keeps all finished ones.
                store.add_episodes([episode], allow_mixed_settings=config.allow_mixed_env_args)

            try:
                if args.human:
                    play_human(config, keep)
                    return
                with console.status(f"loading {config.model}..."):
                    engine = {} if config.vllm_memory_fraction is None else {"gpu_memory_utilization": config.vllm_memory_fraction}
                    llm = load_llm(config.model, backend=config.backend, dtype=config.dtype, device=config.device, **engine)
                agent = Agent(llm, sampling, context, config.max_prompt_tokens)
                if config.eval:
                    results = evaluate_contexts(config, agent, keep)
                    run_id = store.create_run({"kind": "evaluation", **run_settings(args, config)})
                    store.finish_run(run_id, "completed", evaluation=results)
                else:
                    play_with_model(config, agent, keep)
            except KeyboardInterrupt:
                stored = store.count_episodes() - stored_before
                console.print(f"[yellow]interrupted: this run stored {stored} episodes in {store.path}[/]")
                sys.exit(130)

if __name__ == "__main__":
    main()
