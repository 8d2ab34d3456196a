"""How the store's command line prints stored records: times, long texts elided to their ends, whole episodes."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.control import strip_control_codes
from rich.text import Text

from agents.records import Episode, Message, Turn

_KEEP = 2_000  # show prints a text longer than 3 * _KEEP characters as its first and last _KEEP, unless --full
console = Console(highlight=False)


def format_time(seconds: float | None) -> str:
    return "-" if seconds is None else datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def print_text(text: str, *, full: bool, label: Text | None = None) -> None:
    """Print a stored text after ``label``: a long one elided to its ends, unless ``full``. Rich wraps a
    text in time quadratic in its length, so a long text printed whole is written as it is."""
    label = label or Text()
    if len(text) <= 3 * _KEEP:
        console.print(label + Text(text))
    elif full:
        console.print(label, end="")
        console.file.write(strip_control_codes(text) + "\n")
    else:
        console.print(label + Text(text[:_KEEP]))
        console.print(Text(f"… [{len(text) - 2 * _KEEP:,} chars elided; --full to show]", style="dim"))
        console.print(Text(text[-_KEEP:]))


def print_messages(messages: list[Message], *, full: bool) -> None:
    for message in messages:
        console.print(Text(f"[{message['role']}]", style="bold cyan"))
        print_text(message["content"], full=full)


def print_episode(e: Episode, *, full: bool) -> None:
    outcome = Text("success", style="bold green") if e.success else Text("failure", style="bold red")
    console.print(Text.assemble(("episode ", "bold"), e.uuid, "  ", outcome))
    header = [
        ("env", e.env_id),
        ("task", e.task_id),
        ("split", e.split),
        ("model", e.model),
        ("round", str(e.round)),
        ("context", e.context_id or "none"),
        ("seed", "none" if e.seed is None else str(e.seed)),
        ("return", f"{e.total_reward:g}"),
        ("turns", str(e.num_turns)),
        ("tokens", f"{e.prompt_tokens:,} prompt + {e.completion_tokens:,} completion"),
        ("wall time", f"{e.wall_time_s:.2f} s"),
        ("created", format_time(e.created_at)),
    ]
    if e.metadata:
        header.append(("metadata", str(e.metadata)))
    if e.env_args:
        header.append(("env args", str(e.env_args)))
    for name, value in header:
        print_text(value, full=full, label=Text(f"{name:>10}  ", style="dim"))
    last: Turn | None = None
    for turn in e.turns:
        console.rule(f"turn {turn.index}")
        if full or last is None:
            print_messages(turn.prompt_messages, full=full)
        else:
            # Print only what the trace so far does not already show: a prompt usually repeats the
            # previous prompt plus the last reply and observation.
            previous, prompt = last.prompt_messages, turn.prompt_messages
            common = min(len(previous), len(prompt))
            shared = next((i for i, (a, b) in enumerate(zip(previous, prompt)) if a != b), common)
            if shared < len(previous):
                dropped = len(previous) - shared
                console.print(Text(f"(prompt rebuilt: {dropped} earlier messages left out)", style="dim"))
            new = prompt[shared:]
            expected = [{"role": "assistant", "content": last.reply}, {"role": "user", "content": last.observation}]
            if shared == len(previous) and new[:2] == expected:
                new = new[2:]
            print_messages(new, full=full)
        console.print(Text("[reply]", style="bold magenta"))
        print_text(turn.reply, full=full)
        label = Text.assemble(("reward ", "bold"), f"{turn.reward:g}", ("   action ", "bold"))
        print_text(repr(turn.action), full=full, label=label)
        console.print(Text("[observation]", style="bold cyan"))
        print_text(turn.observation, full=full)
        last = turn
