"""Multiple-choice question answering: one question, one reply, reward 1 for the right option.

>>> env = QAEnv()  # the invented formulary of envs.qa_domain, seed 0
>>> observation, info = env.reset(options={"split": "test", "index": 0})
>>> env.step(env.reference_solution()[0])[1]
1.0
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import gymnasium as gym

from envs.base import SPLITS, TextEnv
from envs.qa_domain import FormularyDomain
from envs.qa_items import LETTERS, MCQItem, assemble_splits, load_jsonl

PARSE_WINDOW = 20_000  # characters at the end of a reply that parse_action reads: answers come last
_MAX_TAG_BODY = 300
_SYSTEM_PROMPT_FILE = "qa_system_prompt.txt"

# "a" and "I" are words: after an answer phrase they count as an option letter only when followed by
# punctuation, the end, or one of these words ("the answer is A because ...", not "is a good one").
_CONNECTIVES = frozenset(
    "because since as which and or is was seems appears given due with so then".split()
)
_NEXT_WORD = re.compile(r"[ \t]+([A-Za-z]+)")  # on the same line: a line break ends the answer
_DECOR = r"[\s*_`'\"(\[{:=\-–—>]*"
_TAG = re.compile(rf"<answer>(.{{0,{_MAX_TAG_BODY}}}?)</answer>", re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=len(LETTERS))
def _patterns(letters: str) -> tuple[tuple[re.Pattern[str], ...], ...]:
    """The regex tiers for option letters ``letters`` ("ABCD"), strongest first; group ``l`` is the letter."""
    cls = f"[{letters}{letters.lower()}]"
    end = r"(?![A-Za-z0-9])"
    flags = re.IGNORECASE
    answer_phrases = (
        re.compile(rf"\banswer\b(?:\s+(?:here|then|therefore|thus|now))?"
                   rf"(?:\s*(?:is|would be|should be|will be|must be)\b)?{_DECOR}"
                   rf"(?:(?:option|choice|letter)\b{_DECOR})?(?P<l>{cls}){end}", flags),
        re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\s*\(?(?P<l>{cls})\)?\s*\}}", flags),
    )
    choice_phrases = (
        re.compile(rf"\b(?:choice|option)\s*(?::|=|\b(?:is|would be|should be|will be)\b){_DECOR}"
                   rf"(?P<l>{cls}){end}", flags),
        re.compile(rf"\b(?:option|choice)\s*[(\[]?\s*(?P<l>{cls})\s*[)\]]?\s+(?:is|seems|appears)\s+"
                   rf"(?:to be\s+)?(?:the\s+)?(?:correct|right|best|answer|true)\b", flags),
        re.compile(rf"\b(?:choose|chose|pick|picked|select|selected|go with|going with)\s+"
                   rf"(?:option\s+|choice\s+)?[(\[]?(?P<l>{cls}){end}", flags),
        # "B is correct" at a sentence start only: "Hepatitis B is the correct answer" names no letter.
        re.compile(rf"(?:^|(?<=[.!?;:,])[ \t]*)[(\[]?(?P<l>{cls})[)\]]?\s+is\s+(?:the\s+)?"
                   rf"(?:correct|right|answer)\b", flags | re.MULTILINE),
    )
    marks = (
        re.compile(rf"\((?P<l>{cls})\)", flags),
        re.compile(rf"^[ \t*]*(?P<l>{cls})\)", flags | re.MULTILINE),
        re.compile(rf"\*\*(?P<l>{cls})\*\*", flags),
        re.compile(rf"^[ \t]*(?P<l>{cls})[.:](?:\s|$)", flags | re.MULTILINE),
        re.compile(rf"^[^\w\n]*(?P<l>{cls})[^\w\n]*$", flags | re.MULTILINE),
    )
    return answer_phrases, choice_phrases, marks


def _reads_as_letter(text: str, match: re.Match[str]) -> bool:
    """False for the words "a" / "I" in prose ("A good choice is C"), True for an option letter."""
    if match.group("l").lower() not in "ai":
        return True
    following = _NEXT_WORD.match(text, match.end("l"))
    return following is None or following.group(1).lower() in _CONNECTIVES


def _last_letter(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """The letter of the latest match of any of ``patterns`` that reads as a letter, or ""."""
    best, best_pos = "", -1
    for pattern in patterns:
        for match in pattern.finditer(text):
            if match.start("l") > best_pos and _reads_as_letter(text, match):
                best, best_pos = match.group("l").upper(), match.start("l")
    return best


def _only_letter(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """The letter when all matches of ``patterns`` (that read as letters) agree on one, else ""."""
    found = {m.group("l").upper() for p in patterns for m in p.finditer(text) if _reads_as_letter(text, m)}
    return found.pop() if len(found) == 1 else ""


def _lone_last_line(text: str, letters: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    core = lines[-1].strip(" \t*_`#>~.:;!()[]{}\"'") if lines else ""
    return core.upper() if len(core) == 1 and core.upper() in letters else ""


def _quoted_option(text: str, options: Sequence[str]) -> str:
    """The letter of the one option whose exact text (any case, whole words) the reply contains.

    A mention inside a longer option's mention ("Vitamin A" in "Vitamin A and D") does not count;
    options equal up to case are ambiguous and never match.
    """
    folded = [option.strip().casefold() for option in options]
    haystack = text.casefold()
    spans: list[tuple[int, int, int]] = []  # (start, end, option index)
    for index, needle in enumerate(folded):
        if not needle or folded.count(needle) > 1:
            continue
        # Whole words only: "5 mg once daily" must not match inside "15 mg once daily".
        left = r"(?<!\w)" if re.match(r"\w", needle[0]) else ""
        right = r"(?!\w)" if re.match(r"\w", needle[-1]) else ""
        pattern = left + re.escape(needle) + right
        spans.extend((m.start(), m.end(), index) for m in re.finditer(pattern, haystack))
    # Sorted by start, longest first, a span lies inside an earlier (longer) one iff an earlier span ends
    # at or after its end; distinct options never share a span, their texts differing.
    chosen, reach = set(), -1
    for start, end, index in sorted(spans, key=lambda span: (span[0], -span[1])):
        if end > reach:
            chosen.add(index)
            reach = end
    return LETTERS[chosen.pop()] if len(chosen) == 1 else ""


def parse_choice(reply: Any, options: Sequence[str]) -> str:
    """The option letter a free-form reply chooses among ``options``, or "" when none is clear.

    In order: the last ``<answer>X</answer>`` whose body parses; the last answer phrase ("Answer: B",
    "the answer is (B)", ``\\boxed{B}``); the last choice phrase ("the best option is B", "option B is
    correct", "I choose B"); a lone letter on the last line; letter marks ("(B)", "**B**", a line that
    starts "B)" or "B." or is just "B") when they all agree; an option's exact text when only one
    appears. Never raises.
    """
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", errors="replace")
    elif not isinstance(reply, str):
        reply = str(reply)
    text = reply[-PARSE_WINDOW:]
    letters = LETTERS[: len(options)]
    for body in reversed([m.group(1) for m in _TAG.finditer(text)]):
        letter = _parse_untagged(body, letters, options)
        if letter:
            return letter
    return _parse_untagged(text, letters, options)


def _parse_untagged(text: str, letters: str, options: Sequence[str]) -> str:
    answer_phrases, choice_phrases, marks = _patterns(letters)
    return (
        _last_letter(text, answer_phrases)
        or _last_letter(text, choice_phrases)
        or _lone_last_line(text, letters)
        or _only_letter(text, marks)
        or _quoted_option(text, options)
    )


def _render(item: MCQItem) -> str:
    lines = [f"Question: {item.question}", ""]
    lines += [f"{letter}. {option}" for letter, option in zip(item.letters, item.options)]
    lines += ["", f"Reply with <answer>X</answer>, where X is one of {', '.join(item.letters)}."]
    return "\n".join(lines)


class QAEnv(TextEnv):
    """Single-turn multiple-choice QA: observation = a question with options A-D (up to A-J).

    Reward 1.0 when the reply picks the right option, else 0.0; every episode ends after one step.
    Step info: ``success``, ``task_id``, ``answer`` (the gold letter), ``chosen`` (the parsed letter or "").

    Sources:

    * default: the invented pharmacology formulary of ``envs.qa_domain`` (``domain_seed``,
      ``num_entities``, ``num_options``). 20 drugs x 20 questions = 400 questions: 320 train /
      40 validation / 40 test (in general 20 x ``num_entities``, cut 80/10/10). ``handbook`` is the
      formulary text that answers every question (the context to distill, never in ``instructions``).
    * ``dataset=path``: a JSONL file of MedMCQA-style or ``question/choices/answer`` lines (``format``,
      ``cop_base``: see ``envs.qa_items``), split by its ``split`` field or 80/10/10 by content hash.
      ``handbook`` is "" (such data have none); the domain arguments are ignored.

    ``system_prompt`` is a domain system prompt (``envs/data/qa_system_prompt.txt``) for system prompt
    distillation.
    """

    def __init__(
        self,
        render_mode: str | None = None,
        default_split: str = "train",
        *,
        domain_seed: int = 0,
        num_entities: int = 20,
        num_options: int = 4,
        dataset: str | os.PathLike[str] | None = None,
        format: str | None = None,
        cop_base: int | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode, default_split=default_split)
        if dataset is None:
            self.domain: FormularyDomain | None = FormularyDomain(domain_seed, num_entities, num_options)
            self._splits = self.domain.splits
        else:
            self.domain = None
            self._splits = assemble_splits(load_jsonl(dataset, format=format, cop_base=cop_base))
            if not self._splits[default_split]:
                raise ValueError(f"{dataset}: no items in the default split {default_split!r}")
        self.split_sizes = {split: len(self._splits[split]) for split in SPLITS}
        self._item: MCQItem | None = None

    @property
    def handbook(self) -> str:
        """The formulary handbook (the facts every question needs); "" for a JSONL dataset."""
        return self.domain.handbook if self.domain is not None else ""

    @property
    def system_prompt(self) -> str:
        """The domain system prompt, for system prompt distillation."""
        return resources.files("envs").joinpath("data", _SYSTEM_PROMPT_FILE).read_text(encoding="utf-8")

    def contexts(self) -> dict[str, str]:
        """``handbook`` (the domain's facts; built-in domain only) and ``system_prompt``."""
        shipped = {"handbook": self.handbook} if self.handbook else {}
        return {**shipped, "system_prompt": self.system_prompt}

    @property
    def instructions(self) -> str:
        topic = " about the drugs of a fictional formulary" if self.domain is not None else ""
        return (
            f"You answer multiple-choice questions{topic}. Exactly one option is correct. "
            "Think briefly if it helps, then end your reply with the letter of the correct option in the "
            "form <answer>X</answer>, for example <answer>B</answer>."
        )

    def parse_action(self, reply: str) -> str:
        options = self._item.options if self._item is not None else ("",) * 4
        return parse_choice(reply, options)

    def reference_solution(self) -> list[str]:
        return [self._current().answer_letter]

    def _current(self) -> MCQItem:
        if self._item is None:
            raise gym.error.ResetNeeded("call reset() first: there is no current question")
        return self._item

    def select_task(self, options: dict[str, Any] | None) -> tuple[str, int]:
        split = (options or {}).get("split", self.default_split)
        if split in SPLITS and self.split_sizes[split] == 0:
            raise ValueError(f"split {split!r} has no questions in this dataset")
        return super().select_task(options)

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        self._item = self._splits[split][index]
        return _render(self._item), {"task_id": self._item.task_id, "num_options": len(self._item.options)}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        item = self._current()
        chosen = self.parse_action(action)
        gold = item.answer_letter
        success = chosen == gold
        solution = f"the answer is {gold} ({item.options[item.answer]})."
        if success:
            observation = f"Correct: {solution}"
        elif chosen:
            observation = f"Incorrect: you chose {chosen}; {solution}"
        else:
            observation = f"No option recognised in your reply; {solution}"
        info = {"task_id": item.task_id, "success": success, "answer": gold, "chosen": chosen}
        return observation, float(success), True, False, info
