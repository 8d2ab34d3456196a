"""Play an env with an LLM agent (or at the keyboard) and store every episode.

    python -m agents.play --env textworld --episodes 8 --store exp.db
    python -m agents.play --env math --eval --split test --context knowledge.txt
    python -m agents.play --env frozenlake --human

A composition root: it wires the env, model, agent, rollouts and store together.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import envs
from agents.agent import Agent, Context, context_from_file, env_context
from agents.evaluate import PassRate, paired_difference, pass_rate
from agents.llm import SamplingParams, load_llm
from agents.models import DEFAULT_MODEL, ModelNotFound, resolve_device, resolve_model
from agents.records import Episode, Turn
from agents.rollout import RolloutStats, Task, collect_episodes
from experience_store import ExperienceStore, StoreError
from experience_store.knowledge import knowledge_text

console = Console()
errors = Console(stderr=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agents.play", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="textworld", help=f"env name or Gymnasium id ({', '.join(envs.names())})")
    parser.add_argument(
        "--env-args", nargs="*", default=[], metavar="NAME=VALUE", help="the env's constructor arguments, e.g. max_steps=10"
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
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
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


def summary_table(title: str, episodes: list[Episode], stats: RolloutStats) -> Table:
    table = Table(title=title)
    for column in ("episodes", "success rate [95% CI]", "mean return", "mean turns", "tokens/s"):
        table.add_column(column, justify="right")
    n = len(episodes)
    if n:
        table.add_row(
            str(n),
            str(PassRate(sum(e.success for e in episodes), n)),
            f"{sum(e.total_reward for e in episodes) / n:.2f}",
            f"{sum(e.num_turns for e in episodes) / n:.1f}",
            f"{stats.tokens_per_second:.1f}",
        )
    return table


@contextmanager
def live_view(total: int, stats: RolloutStats) -> Iterator[tuple[Progress, int, Callable[[Turn], None]]]:
    """A progress bar with success rate and tokens/s, over a panel showing the latest turn."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
    )
    task = progress.add_task("episodes", total=total, status="")
    panel = Panel("waiting for the first reply...", title="latest turn")
    group = Group(progress, panel)

    def show_turn(turn: Turn) -> None:
        panel.renderable = Group(
            Text(turn.observation[-600:], style="dim"),
            Text(f"action: {turn.action!r}   reward: {turn.reward:g}", style="bold"),
        )
        progress.update(task, status=f"success {stats.successes}/{stats.episodes}  {stats.tokens_per_second:.1f} tok/s")

    with Live(group, console=console, refresh_per_second=4):
        yield progress, task, show_turn


def play_tasks(env_name: str, split: str, episodes: int) -> list[Task]:
    """The tasks to play (to collect experience): the split in order, starting over when more episodes are
    asked for than it holds (sampled replies differ; an evaluation, ``--eval``, never repeats a task)."""
    size = envs.make(env_name).split_sizes[split]
    return [Task(split, i % size) for i in range(episodes)]


def play_with_model(args: argparse.Namespace, agent: Agent, store: ExperienceStore) -> list[Episode]:
    stats = RolloutStats()
    finished: list[Episode] = []
    tasks = play_tasks(args.env, args.split, args.episodes)
    with live_view(len(tasks), stats) as (progress, task, show_turn):
        for episode in collect_episodes(
            lambda: envs.make(args.env), agent, tasks, env_id=args.env,
            batch_size=args.batch_size, round=args.round, stats=stats, on_turn=show_turn,
        ):
            store.add_episodes([episode])  # one transaction per episode: Ctrl-C keeps all finished ones
            finished.append(episode)
            progress.advance(task)
    console.print(summary_table(f"{args.env} ({args.split}), {agent.llm.name}", finished, stats))
    return finished


def play_human(args: argparse.Namespace, store: ExperienceStore) -> None:
    env = envs.make(args.env)
    console.print(Panel(env.instructions, title="instructions"))
    for index, task in enumerate(play_tasks(args.env, args.split, args.episodes)):
        observation, info = env.reset(options={"split": task.split, "index": task.index})
        episode = Episode(env_id=args.env, task_id=str(info["task_id"]), split=args.split, model="human")
        done = False
        while not done:
            console.print(Panel(observation, title=f"episode {index + 1}, turn {episode.num_turns + 1}"))
            if info.get("admissible_actions"):
                console.print("[dim]admissible: " + ", ".join(map(str, info["admissible_actions"][:20])))
            try:
                reply = console.input("[bold]> ")
            except EOFError:
                console.print("\n[yellow]left the game; finished episodes are stored[/]")
                return
            action = env.parse_action(reply)
            prompt = [{"role": "system", "content": env.instructions}, {"role": "user", "content": observation}]
            observation, reward, terminated, truncated, info = env.step(action)
            episode.turns.append(Turn(episode.num_turns, prompt, reply, action, reward, observation))
            episode.total_reward += reward
            done = terminated or truncated
        episode.success = bool(info["success"])
        console.print(Panel(observation, title="won" if episode.success else "episode over"))
        store.add_episodes([episode])


def evaluate(args: argparse.Namespace, agent: Agent, store: ExperienceStore) -> None:
    """Pass rate on the split without and (if given) with the context; recorded as a run in the store."""
    table = Table(title=f"{args.env} {args.split} pass rate, {agent.llm.name} (each task once, temperature {args.temperature})")
    table.add_column("context")
    table.add_column("pass rate [95% CI]", justify="right")
    table.add_column("paired change from none: points [95%] McNemar p", justify="right")
    table.add_column("tasks", justify="right")
    results: dict[str, dict[str, Any]] = {}
    rates: list[PassRate] = []
    contexts = [("none", None)] + ([("with context", agent.context)] if agent.context else [])
    for label, context in contexts:
        evaluated = Agent(agent.llm, agent.sampling, context, agent.max_prompt_tokens)
        with console.status(f"evaluating {label}..."):
            rate = pass_rate(
                evaluated, args.env, args.split, args.episodes, batch_size=args.batch_size,
                on_episode=lambda e: store.add_episodes([e]),
            )
        results[label] = rate.as_dict()
        rates.append(rate)
        change = paired_difference(rates[0], rate) if len(rates) > 1 else None
        table.add_row(label, str(rate), str(change or ""), change.counts if change else "")
    console.print(table)
    run_id = store.create_run({"kind": "evaluation", **{k: str(v) for k, v in vars(args).items()}})
    store.finish_run(run_id, "completed", evaluation=results)


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


def main(argv: list[str] | None = None) -> None:
    """Every flag, the context and the model's name are checked before the store is opened (or created),
    and the store is opened (its writability checked) before the model loads. Ctrl-C exits 130 and says
    how many episodes this run stored."""
    args = parse_args(argv)
    try:
        check_numbers(args)
        args.env = envs.spec(args.env).name  # one name per env in the store, whichever alias was typed
        if args.env_args:
            envs.configure(args.env, **envs.parse_env_args(args.env_args))
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
            try:
                if args.human:
                    play_human(args, store)
                    return
                with console.status(f"loading {args.model}..."):
                    llm = load_llm(args.model, backend=args.backend, dtype=args.dtype, device=args.device)
                agent = Agent(llm, sampling, context, args.max_prompt_tokens)
                (evaluate if args.eval else play_with_model)(args, agent, store)
            except KeyboardInterrupt:
                stored = store.count_episodes() - stored_before
                console.print(f"[yellow]interrupted: this run stored {stored} episodes in {store.path}[/]")
                sys.exit(130)
    except (StoreError, ModelNotFound, ValueError, KeyError) as err:
        errors.print(f"[red]error:[/] {err.args[0] if isinstance(err, KeyError) else err}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted before the store was opened: nothing was written[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
