"""Playing an env with an LLM agent (or at the keyboard), shown live: the agent layer of ``python -m agents.play``.

Episodes go to an ``on_episode`` callback as they finish; the command (``commands.play``) wires them to the
experience store, a layer above this one, and builds its flags from ``PlayConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import envs
from agents.agent import Agent, ContextKind
from agents.evaluate import Evaluation, PassRate, evaluate, paired_difference
from agents.models import DEFAULT_MODEL, DType
from agents.records import Episode, Turn
from agents.rollout import RolloutStats, Task, collect_episodes
from common.config import check_ranges, config_field

console = Console()


@dataclass
class PlayConfig:
    """The settings of one ``python -m agents.play`` run (which episodes, which model, how it samples); the
    command builds its flags from these fields. The env's alias becomes its one name, and ``eval`` on the
    train split measures validation."""

    env: str = config_field("textworld", f"env name or Gymnasium id ({', '.join(envs.names())})")
    env_args: tuple[str, ...] = config_field((), "the env's constructor arguments, e.g. max_steps=10")
    allow_mixed_env_args: bool = config_field(
        False, "store these episodes even if the store holds this env's episodes played with other --env-args")
    model: str = config_field(DEFAULT_MODEL, "named model, local folder or Hugging Face id")
    episodes: int = config_field(8, "episodes to play (tasks 0..N-1 of the split)", minimum=1)
    split: Literal["train", "validation", "test"] = config_field("train", "the env's split the tasks come from")
    context_kind: ContextKind = config_field(
        "knowledge", "how --context is placed: a block after the instructions, or (system_prompt) before them")
    context_heading: str | None = config_field(None, "the context block's heading (None: the context kind's)")
    backend: Literal["hf", "vllm"] = config_field("hf", "engine that generates the replies")
    vllm_memory_fraction: float | None = config_field(
        None, "with --backend vllm: the fraction of GPU memory it may take (None: vLLM's default)", maximum=1.0)
    dtype: DType = config_field("float32", "the model's weights' dtype (auto: the checkpoint's)")
    device: str = config_field("cpu", "cpu, cuda, cuda:N or auto")
    temperature: float = config_field(0.7, "sampling temperature (0 = greedy)", minimum=0.0)
    top_p: float = config_field(1.0, "nucleus sampling: the probability mass kept, in (0, 1]", maximum=1.0)
    max_new_tokens: int = config_field(128, "reply length cap in tokens", minimum=1)
    max_prompt_tokens: int = config_field(2048, "history is windowed to fit", minimum=1)
    batch_size: int = config_field(8, "episodes played in lockstep", minimum=1)
    seed: int = config_field(0, "sampling seed")
    round: int = config_field(0, "the experiential-learning round, for provenance", minimum=0)
    eval: bool = config_field(
        False, "report the pass rate on --split (validation or test) with and without the context, and record it")

    def __post_init__(self) -> None:
        check_ranges(self)
        self.env_args = tuple(self.env_args)
        if self.top_p <= 0:  # an open bound, which a field's range cannot say
            raise ValueError(f"top_p must be > 0, got {self.top_p}")
        if self.vllm_memory_fraction is not None:
            if self.backend != "vllm":
                raise ValueError("--vllm-memory-fraction goes with --backend vllm")
            if self.vllm_memory_fraction <= 0:
                raise ValueError(f"vllm_memory_fraction must be > 0, got {self.vllm_memory_fraction}")
        self.env = envs.spec(self.env).name  # one name per env in the store, whichever alias was typed
        if self.eval and self.split == "train":
            self.split = "validation"


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


def play_with_model(config: PlayConfig, agent: Agent, on_episode: Callable[[Episode], None]) -> list[Episode]:
    stats = RolloutStats()
    finished: list[Episode] = []
    tasks = play_tasks(config.env, config.split, config.episodes)
    with live_view(len(tasks), stats) as (progress, task, show_turn):
        for episode in collect_episodes(
            lambda: envs.make(config.env), agent, tasks, env_id=config.env,
            batch_size=config.batch_size, round=config.round, stats=stats, on_turn=show_turn,
        ):
            on_episode(episode)  # as each finishes: Ctrl-C keeps all finished ones
            finished.append(episode)
            progress.advance(task)
    console.print(summary_table(f"{config.env} ({config.split}), {agent.llm.name}", finished, stats))
    return finished


def play_human(config: PlayConfig, on_episode: Callable[[Episode], None]) -> None:
    env = envs.make(config.env)
    console.print(Panel(env.instructions, title="instructions"))
    for index, task in enumerate(play_tasks(config.env, config.split, config.episodes)):
        observation, info = env.reset(options={"split": task.split, "index": task.index})
        episode = Episode(env_id=config.env, task_id=str(info["task_id"]), split=config.split, model="human")
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
        on_episode(episode)


def evaluate_contexts(config: PlayConfig, agent: Agent, on_episode: Callable[[Episode], None]) -> dict[str, dict[str, Any]]:
    """Pass rate on the split without and (if given) with the context, printed; each column's ``as_dict``."""
    table = Table(title=f"{config.env} {config.split} pass rate, {agent.llm.name} (each task once, temperature {config.temperature})")
    table.add_column("context")
    table.add_column("pass rate [95% CI]", justify="right")
    table.add_column("paired change from none: points [95%] McNemar p", justify="right")
    table.add_column("tasks", justify="right")
    results: dict[str, dict[str, Any]] = {}
    rates: list[PassRate] = []
    contexts = [("none", None)] + ([("with context", agent.context)] if agent.context else [])
    for label, context in contexts:
        with console.status(f"evaluating {label}..."):
            rate = evaluate(
                agent.llm, agent.sampling, Evaluation(config.env, config.split, config.episodes, context),
                max_prompt_tokens=agent.max_prompt_tokens, batch_size=config.batch_size, on_episode=on_episode,
            )
        results[label] = rate.as_dict()
        rates.append(rate)
        change = paired_difference(rates[0], rate) if len(rates) > 1 else None
        table.add_row(label, str(rate), str(change or ""), change.counts if change else "")
    console.print(table)
    return results


if __name__ == "__main__":  # the command is composed above the layers; importing this module never loads it
    from commands.play import main

    main()
