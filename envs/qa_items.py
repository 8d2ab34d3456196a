"""Multiple-choice items for the QA env, their split into train / validation / test, and JSONL loaders.

``load_jsonl`` reads one item per line in either of two formats, detected per line (or forced with
``format=``):

* ``"medmcqa"``: ``{"question", "opa", "opb", "opc", "opd", "cop", ...}``, ``cop`` naming the correct
  option. Its base differs between releases: the Hugging Face release (``openlifescienceai/medmcqa``)
  stores ``cop`` as a ClassLabel ``a``-``d``, i.e. 0-3; the original release documents it as 1-4. The base
  is decided per file from the values seen: a 0 means 0-based, a 4 means 1-based; both, or neither (only
  1-3, undecidable), is an error unless ``cop_base=0`` or ``1`` is given. A letter ``"a"``-``"d"`` is taken
  as the letter. ``cop=-1`` (the unlabelled test split of the Hugging Face release) is an error.
* ``"choices"``: ``{"question", "choices": [...], "answer"}`` with 2-10 choices. An int ``answer`` is a
  0-based index; a string is the text of one choice if it equals exactly one, else a letter (``"B"``).

A line may carry ``"split"`` (``train``, ``validation``, ``test``; ``val``, ``valid``, ``dev`` also
accepted); lines without one are split by a SHA-256 hash of their content, about 80/10/10. Items with
the same content (question and set of options, ignoring case and spacing) are kept once, at their
first occurrence, so the splits are disjoint by content. A bad line raises ``ValueError`` naming the
file and line number.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.base import SPLITS

LETTERS = string.ascii_uppercase[:10]  # option labels A-J: at most 10 options
MEDMCQA_KEYS = ("opa", "opb", "opc", "opd")
FORMATS = ("medmcqa", "choices")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
                 "dev": "validation", "test": "test"}


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question: ``options[answer]`` is correct.

    ``subject`` says what the question is about (a domain entity, MedMCQA's ``subject_name``); it is
    metadata, not part of the content.
    """

    question: str
    options: tuple[str, ...]
    answer: int
    subject: str = ""

    def __post_init__(self) -> None:
        if not 2 <= len(self.options) <= len(LETTERS):
            raise ValueError(f"an item needs 2-{len(LETTERS)} options, got {len(self.options)}")
        if not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer index {self.answer} out of range for {len(self.options)} options")

    @property
    def letters(self) -> str:
        """The option labels, ``"ABCD"`` for four options."""
        return LETTERS[: len(self.options)]

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]

    @property
    def content_key(self) -> str:
        """What makes two items the same question: the text and the set of options, normalised."""
        return json.dumps([_normalise(self.question), sorted(_normalise(o) for o in self.options)])

    @property
    def task_id(self) -> str:
        """``qa-`` and 12 hex digits of the SHA-1 of the exact question, options and answer."""
        canonical = json.dumps([self.question, list(self.options), self.answer], ensure_ascii=False)
        return "qa-" + hashlib.sha1(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def hash_split(item: MCQItem) -> str:
    """The split a content hash assigns: buckets 0-7 of 10 train, 8 validation, 9 test."""
    bucket = int(hashlib.sha256(item.content_key.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def assemble_splits(pairs: Iterable[tuple[MCQItem, str | None]]) -> dict[str, list[MCQItem]]:
    """Group ``(item, split)`` pairs by split (``None``: by content hash), keeping each content once."""
    splits: dict[str, list[MCQItem]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    for item, split in pairs:
        key = item.content_key
        if key in seen:
            continue
        seen.add(key)
        splits[split or hash_split(item)].append(item)
    return splits


# -- JSONL loaders -------------------------------------------------------------------------------------


@contextmanager
def _at(path: Path, number: int) -> Iterator[None]:
    """Report any ``ValueError`` raised inside as a problem of line ``number`` of ``path``."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{path}:{number}: {error}") from None


def _as_text(value: Any, what: str) -> str:
    """A string field; numbers (an option "42") are accepted as their text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return str(value)


def _split_of(record: Mapping[str, Any]) -> str | None:
    split = record.get("split")
    if split is None:
        return None
    if not isinstance(split, str) or split.strip().lower() not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[split.strip().lower()]


def _detect_format(record: Mapping[str, Any]) -> str:
    if "opa" in record:
        return "medmcqa"
    if "choices" in record:
        return "choices"
    raise ValueError("unknown format: expected MedMCQA keys (question, opa-opd, cop) "
                     "or question/choices/answer")


def _choices_item(record: Mapping[str, Any]) -> MCQItem:
    choices = record.get("choices")
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"'choices' must be a list of 2-{len(LETTERS)} strings")
    options = tuple(_as_text(choice, "each choice") for choice in choices)
    answer = record.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str):
        matches = [i for i, option in enumerate(options) if option == answer]
        letter = answer.strip().upper()
        if len(matches) == 1:
            index = matches[0]
        elif len(letter) == 1 and letter in LETTERS[: len(options)]:
            index = LETTERS.index(letter)
        else:
            raise ValueError(f"answer {answer!r} is neither one choice's text nor an option letter")
    else:
        raise ValueError(f"'answer' must be an index, a letter or a choice's text, got {answer!r}")
    if not 0 <= index < len(options):
        raise ValueError(f"answer index {index} out of range for {len(options)} choices")
    question = _as_text(record.get("question"), "'question'")
    return MCQItem(question, options, index, str(record.get("subject") or ""))


def _medmcqa_cop(record: Mapping[str, Any]) -> int | str:
    """The raw ``cop``: an int 0-4 (base decided per file) or an upper-case letter A-D."""
    cop = record.get("cop")
    if isinstance(cop, str) and cop.strip().lower() in ("a", "b", "c", "d"):
        return cop.strip().upper()
    if isinstance(cop, bool) or not isinstance(cop, int):
        raise ValueError(f"'cop' must be an int or a letter a-d, got {cop!r}")
    if cop == -1:
        raise ValueError("cop is -1: the item has no answer (MedMCQA's test split is unlabelled)")
    if not 0 <= cop <= 4:
        raise ValueError(f"cop {cop} out of range 0-4")
    return cop


def _cop_base(path: Path, cops: list[tuple[int, int]]) -> int:
    """0 or 1: the base of a file's integer cops, given as ``(line number, cop)``."""
    zero = next((number for number, cop in cops if cop == 0), None)
    four = next((number for number, cop in cops if cop == 4), None)
    if zero is not None and four is not None:
        raise ValueError(f"{path}:{max(zero, four)}: cop 0 (line {zero}) and cop 4 (line {four}) in one "
                         "file: neither 0-based nor 1-based")
    if cops and zero is None and four is None:
        raise ValueError(f"{path}: cannot tell whether cop is 0-based (Hugging Face release) or 1-based "
                         "(original release) from values 1-3 alone; pass cop_base=0 or cop_base=1")
    return 1 if four is not None else 0


def _medmcqa_item(record: Mapping[str, Any], cop: int | str, base: int) -> MCQItem:
    options = tuple(_as_text(record.get(key), repr(key)) for key in MEDMCQA_KEYS)
    index = LETTERS.index(cop) if isinstance(cop, str) else cop - base
    if not 0 <= index < len(options):
        raise ValueError(f"cop {cop} out of range for a {base}-based file")
    question = _as_text(record.get("question"), "'question'")
    return MCQItem(question, options, index, str(record.get("subject_name") or ""))


def _read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file with their 1-based line numbers; blank lines are skipped."""
    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            with _at(path, number):
                try:
                    record = json.loads(raw.decode("utf-8-sig"))  # -sig: tolerate a byte-order mark
                except ValueError as error:  # bad UTF-8 or bad JSON
                    raise ValueError(f"not a JSON line: {error}") from None
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    return records


def load_jsonl(
    path: str | os.PathLike[str], format: str | None = None, cop_base: int | None = None
) -> list[tuple[MCQItem, str | None]]:
    """The items of a JSONL file with their ``split`` field (``None`` where absent), in file order.

    ``format`` is ``"medmcqa"``, ``"choices"`` or ``None`` (detected per line); ``cop_base`` (0 or 1)
    overrides the detected base of MedMCQA's ``cop``. See the module docstring for the rules.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)} or None")
    if cop_base not in (None, 0, 1):
        raise ValueError(f"cop_base must be 0, 1 or None, got {cop_base!r}")
    rows = []  # (line number, record, split, cop: None for the "choices" format)
    for number, record in _read_records(path):
        with _at(path, number):
            kind = format or _detect_format(record)
            cop = _medmcqa_cop(record) if kind == "medmcqa" else None
            rows.append((number, record, _split_of(record), cop))
    if cop_base is None:
        cop_base = _cop_base(path, [(number, cop) for number, _, _, cop in rows if isinstance(cop, int)])
    pairs = []
    for number, record, split, cop in rows:
        with _at(path, number):
            item = _choices_item(record) if cop is None else _medmcqa_item(record, cop, cop_base)
        pairs.append((item, split))
    return pairs
