"""Extraction: the model reads one of its own episodes and writes short, general knowledge items.

As in the OPCD paper (its experience-update templates, adapted to a small model: short and concrete):
the trace holds each turn's observation and reply, never the env's instructions (for the grid games
those are the rules the agent must infer by playing, which the paper strips), followed by the outcome
("Final result: success/failure" and the env's last message as the reason) unless it is withheld (the
paper gives math no correctness label). Items come back on lines starting ``- EXPERIENCE ITEM:``;
``parse_items`` reads them out of whatever the model wrote.

One worked example precedes the request: without it the default 135M model never writes the marker;
with it, it does, and it copies and perturbs what it is shown. So each env has its own example, in its
own observation format, with items that are true (``experience_store.examples``: an env not listed gets
its style's), and an item that copies the example shown is dropped.

Where a task has both a success and a failure, ``with_contrasts`` pairs them (ExpeL's comparison): the
extractor sees both traces and writes what made the difference.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import envs
from agents.llm import LLM, Generation, SamplingParams
from agents.records import Episode, Message
from experience_store.examples import Example, TaskStyle, contrast_example_for, example_for, short_env_name
from experience_store.records import KnowledgeItem
from experience_store.similarity import Containment, Similarity

ITEM_MARKER = "- EXPERIENCE ITEM:"
# Single-step envs (any registration of these classes: math, addition, qa) get the paper's problem
# template; every other env (a researcher's new one included) the game template, which reads any log.
PROBLEM_ENTRY_POINTS: frozenset[str] = frozenset({"envs.math_env:MathEnv", "envs.qa_env:QAEnv"})

SYSTEM = "You are an AI language model that continuously refines its internal experience."
TEMPLATES: dict[TaskStyle, str] = {
    "problem": (
        "Here is a problem you solved earlier and the answer you gave.\n\n{trace}{outcome}\n\n"
        "Write 1 to 3 short, general insights that will help you solve other problems of this kind: "
        "methods, checks or common mistakes, not the numbers or details of this problem.\n"
        'Write each insight on its own line, starting with "- EXPERIENCE ITEM:".'
    ),
    "game": (
        "Here is the log of a game you played. Its rules were not fully explained: work them out from what "
        "happened.\n\n{trace}{outcome}\n\n"
        "Compare your moves with what happened. Write 1 or 2 short, general rules or strategies of this game "
        "that will help you win on other maps, not details of this one.\n"
        'Write each on its own line, starting with "- EXPERIENCE ITEM:".'
    ),
}
# ExpeL's comparison: a success and a failure on the same task, and what made the difference.
CONTRAST_TEMPLATES: dict[TaskStyle, str] = {
    "problem": (
        "Here are two answers you gave to the same problem: the first succeeded, the second failed.\n\n"
        "SUCCESSFUL ATTEMPT\n{success}\n\nFAILED ATTEMPT\n{failure}\n\n"
        "What did the successful answer do that the failed one did not? Write 1 to 3 short, general insights "
        "that will help you solve other problems of this kind, not the numbers or details of this problem.\n"
        'Write each insight on its own line, starting with "- EXPERIENCE ITEM:".'
    ),
    "game": (
        "Here are two logs of the same game: the first was won, the second lost. Its rules were not fully "
        "explained: work them out from what happened.\n\nWON GAME\n{success}\n\nLOST GAME\n{failure}\n\n"
        "What did the winning moves do that the losing ones did not? Write 1 or 2 short, general rules or "
        "strategies of this game that will help you win on other maps, not details of this one.\n"
        'Write each on its own line, starting with "- EXPERIENCE ITEM:".'
    ),
}


def task_key(episode: Episode) -> tuple[str, str]:
    """What identifies an episode's task: its env (by short name where registered) and its ``task_id``."""
    return (short_env_name(episode.env_id) or episode.env_id, episode.task_id)


@dataclass(frozen=True)
class Contrast:
    """A success and a failure on the same task (same env and ``task_id``), extracted from together."""

    success: Episode
    failure: Episode

    def __post_init__(self) -> None:
        if not self.success.success or self.failure.success:
            raise ValueError("a contrast needs a successful episode and a failed one, in that order")
        if task_key(self.success) != task_key(self.failure):
            raise ValueError(
                f"a contrast needs one task, got {task_key(self.success)} and {task_key(self.failure)}"
            )

    @property
    def episodes(self) -> tuple[Episode, Episode]:
        return (self.success, self.failure)


Source = Episode | Contrast


def with_contrasts(episodes: Sequence[Episode]) -> list[Source]:
    """``episodes`` with the newest success and newest failure of each task that has both made one ``Contrast``.

    The order is kept: a contrast stands where the newer of its two episodes stood (newer by
    ``created_at``, ties to the later position), and the older one leaves its place. Every other
    episode, another success or failure of a paired task included, stays a single source.
    """
    newest: dict[tuple[tuple[str, str], bool], int] = {}  # (task, success) -> position of its newest
    for position, episode in enumerate(episodes):
        key = (task_key(episode), episode.success)
        best = newest.get(key)
        if best is None or episode.created_at >= episodes[best].created_at:
            newest[key] = position
    placed: dict[int, Contrast] = {}
    absorbed: set[int] = set()
    for (task, success), position in newest.items():
        if not success or (task, False) not in newest:
            continue
        failed = newest[(task, False)]
        later, earlier = sorted(
            (position, failed), key=lambda i: (episodes[i].created_at, i), reverse=True
        )
        placed[later] = Contrast(episodes[position], episodes[failed])
        absorbed.add(earlier)
    return [placed.get(i, episode) for i, episode in enumerate(episodes) if i not in absorbed]

MAX_ITEM_CHARS = 300  # a longer "item" is a ramble, not a short transferable rule
MIN_ITEM_WORDS = 3
_MARKER = re.compile(r"experience[ _]item\s*#?\s*\d*\s*\**\s*[:：]", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_PLACEHOLDER = re.compile(r"^[<\[(].*[>\])]$|^\.+$")
_EDGE = " \t-*•_\"'`“”‘’:"


def task_style(env_name: str) -> TaskStyle:
    """Which extraction template an env gets: ``problem`` for single-step tasks, else ``game``."""
    return "problem" if envs.spec(env_name).entry_point in PROBLEM_ENTRY_POINTS else "game"


@dataclass(frozen=True)
class ExtractionOptions:
    """How an episode is shown to the extracting model."""

    withhold_outcome: bool = False  # the paper's math setting: the model is not told whether it was right
    max_turns: int = 8  # a longer episode shows its first turn and its last max_turns - 1
    max_chars: int = 1_200  # per observation or reply; longer ones keep their head and tail

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_chars < 40:
            raise ValueError(f"max_turns must be >= 1 and max_chars >= 40, got {self.max_turns}, {self.max_chars}")


def _clip(text: str, max_chars: int) -> str:
    text = text.strip()
    if len(text) <= max_chars:
        return text
    half = (max_chars - 5) // 2
    return f"{text[:half].rstrip()} [...] {text[-half:].lstrip()}"


def render_trace(episode: Episode, style: TaskStyle, options: ExtractionOptions = ExtractionOptions()) -> str:
    """The episode as the extractor reads it: observations and replies, without the system message.

    Each turn's observation is the last message of its prompt (the env's instructions, and any context
    the agent was given, live in the system message and are left out).
    """
    turns = list(episode.turns)
    if style == "problem" and len(turns) == 1:
        (turn,) = turns
        observation = _clip(turn.prompt_messages[-1]["content"], options.max_chars)
        return f"Problem:\n{observation}\n\nYour answer:\n{_clip(turn.reply, options.max_chars)}"
    shown: list[str] = []
    keep = set(range(len(turns)))
    if len(turns) > options.max_turns:
        keep = {0, *range(len(turns) - options.max_turns + 1, len(turns))}
    for position, turn in enumerate(turns):
        if position not in keep:
            if position - 1 in keep:
                shown.append(f"[... {len(turns) - len(keep)} turns left out ...]")
            continue
        observation = _clip(turn.prompt_messages[-1]["content"], options.max_chars)
        shown.append(f"Turn {position + 1}\nGame:\n{observation}\nYou:\n{_clip(turn.reply, options.max_chars)}")
    return "\n\n".join(shown)


def render_outcome(episode: Episode, options: ExtractionOptions = ExtractionOptions()) -> str:
    """"Final result: success/failure" and the env's last message (its reason); "" when withheld."""
    if options.withhold_outcome or not episode.turns:
        return ""
    result = "success" if episode.success else "failure"
    return _outcome(result, _clip(episode.turns[-1].observation, options.max_chars))


def _outcome(result: str, feedback: str) -> str:
    return f"Final result: {result}" + (f"\nFeedback: {feedback}" if feedback else "")


def _request(style: TaskStyle, trace: str, outcome: str) -> str:
    return TEMPLATES[style].format(trace=trace, outcome=f"\n\n{outcome}" if outcome else "")


def extraction_messages(
    source: Source, style: TaskStyle, options: ExtractionOptions = ExtractionOptions()
) -> list[Message]:
    """The chat that asks the model for knowledge items about ``source``, after a worked example of its env.

    An episode gets the style's template after its env's example (``example_for``); a ``Contrast`` gets
    both traces, each with its outcome, after its env's contrast example (``contrast_example_for``).
    """
    if isinstance(source, Contrast):
        return _contrast_messages(source, style, options)
    example = example_for(source.env_id, style)
    example_outcome = "" if options.withhold_outcome else _outcome(example.result, example.feedback)
    trace = render_trace(source, style, options)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": _request(style, example.trace, example_outcome)},
        {"role": "assistant", "content": _answer(example.items)},
        {"role": "user", "content": _request(style, trace, render_outcome(source, options))},
    ]


def _answer(items: Sequence[str]) -> str:
    return "\n".join(f"{ITEM_MARKER} {item}" for item in items)


def _contrast_messages(contrast: Contrast, style: TaskStyle, options: ExtractionOptions) -> list[Message]:
    if options.withhold_outcome:
        raise ValueError("a contrast shows which attempt succeeded: it cannot withhold the outcome")
    example = contrast_example_for(contrast.success.env_id, style)

    def request(success: str, failure: str) -> str:
        return CONTRAST_TEMPLATES[style].format(success=success, failure=failure)

    def side(episode: Episode) -> str:
        return f"{render_trace(episode, style, options)}\n{render_outcome(episode, options)}"

    def example_side(side_example: Example) -> str:
        return f"{side_example.trace}\n{_outcome(side_example.result, side_example.feedback)}"

    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": request(example_side(example.success), example_side(example.failure))},
        {"role": "assistant", "content": _answer(example.items)},
        {"role": "user", "content": request(side(contrast.success), side(contrast.failure))},
    ]


def strip_thinking(text: str) -> str:
    """``text`` without reasoning: closed ``<think>`` blocks go, text before a stray ``</think>`` (a
    template that opened the block itself) goes, and an unclosed ``<think>`` loses everything after it."""
    text = _THINK.sub("", text)
    closing = text.lower().rfind("</think>")
    if closing >= 0:
        text = text[closing + len("</think>") :]
    opening = text.lower().find("<think>")
    return text if opening < 0 else text[:opening]


def _clean(raw: str) -> str | None:
    text = " ".join(unicodedata.normalize("NFKC", raw).split()).strip(_EDGE).strip()
    words = text.split()
    if len(words) < MIN_ITEM_WORDS or len(text) > MAX_ITEM_CHARS or _PLACEHOLDER.match(text):
        return None
    if not any(ch.isalpha() for ch in text):
        return None
    return text


def parse_items(text: str) -> list[str]:
    """The knowledge items in a model's reply, in order, each once.

    An item is the text after an ``EXPERIENCE ITEM:`` marker (any case, with or without the leading
    dash, bold or a number) up to the end of its line or the next marker: several markers on one line
    give several items. Reasoning in ``<think>`` blocks is ignored. Junk is dropped: fewer than three
    words, no letters, a bare placeholder (``<...>``, ``[...]``) or longer than ``MAX_ITEM_CHARS``.
    Text without a marker gives no items.
    """
    text = strip_thinking(text)
    markers = list(_MARKER.finditer(text))
    items: list[str] = []
    seen: set[str] = set()
    for marker, following in zip(markers, [*markers[1:], None]):
        end = len(text) if following is None else following.start()
        line_end = text.find("\n", marker.end())
        if 0 <= line_end < end:
            end = line_end
        item = _clean(text[marker.end() : end])
        if item is not None and item.lower() not in seen:
            seen.add(item.lower())
            items.append(item)
    return items


def finished_lines(generation: Generation) -> str:
    """The reply without its last line when the token limit cut it off (an item cut mid-sentence)."""
    if generation.finish_reason == "stop":
        return generation.text
    return generation.text[: generation.text.rfind("\n") + 1]


@dataclass
class Extractor:
    """Writes knowledge items about episodes and contrasts with ``llm``, each item with its provenance.

    The extraction calls of one ``extract`` are one batched generation with one sampling seed: a
    candidate's items depend only on its seed and its sources. Items that ``copies`` finds in the
    worked example shown (the env's own) are not knowledge and are dropped; so is a last line the token
    limit cut off.
    """

    llm: LLM
    style: TaskStyle
    options: ExtractionOptions = ExtractionOptions()
    sampling: SamplingParams = SamplingParams(max_new_tokens=192, temperature=0.7, top_p=0.95, top_k=20)
    round: int = 0
    copies: Similarity = field(default_factory=Containment)  # (item, example item) -> a copy?

    def extract(self, sources: Sequence[Source], *, env_id: str, seed: int) -> list[list[KnowledgeItem]]:
        """Items about each source, in order, each with its source episodes, model, round, seed and step.

        A ``Contrast``'s items name both episodes (success first) and carry ``metadata["contrast"] = True``.
        """
        if not sources:
            return []
        conversations = [extraction_messages(source, self.style, self.options) for source in sources]
        params = replace(self.sampling, seed=seed)
        generations = self.llm.generate(conversations, params)
        written: list[list[KnowledgeItem]] = []
        for step, (source, generation) in enumerate(zip(sources, generations, strict=True), start=1):
            metadata: dict[str, object] = {"seed": seed, "step": step}
            episodes: tuple[Episode, ...]
            if isinstance(source, Contrast):
                episodes, shown = source.episodes, contrast_example_for(source.success.env_id, self.style).items
                metadata |= {"outcome_shown": True, "contrast": True}
            else:
                episodes, shown = (source,), example_for(source.env_id, self.style).items
                metadata["outcome_shown"] = not self.options.withhold_outcome
            written.append(
                [
                    KnowledgeItem(
                        text, env_id=env_id, model=self.llm.name, round=self.round,
                        source_episodes=[e.uuid for e in episodes], metadata=dict(metadata),
                    )
                    for text in parse_items(finished_lines(generation))
                    if not any(self.copies(text, copied) for copied in shown)
                ]
            )
        return written
