"""Reading the final answer out of a reply: an ``Answer:`` line, then ``\\boxed{}``, then a fallback."""

from __future__ import annotations

import re

from envs.math_check.limits import BARE_ANSWER_CHARS, TAIL_CHARS
from envs.math_check.normalise import _prepare
from envs.math_check.parse import _NAMES

_ANSWER_RE = re.compile(r"(?i)\banswer[*_]*[^\S\n]*[:：]")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MATH_SPAN_RE = re.compile(r"\$+([^$]+)\$+|\\\((.+?)\\\)")
_NUMBER_TOKEN_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?%?")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def extract_answer(reply: str, fallback: str = "last_number") -> str | None:
    """The final answer written in ``reply``, or None.

    In order: the last ``Answer: ...`` line (with ``\\boxed{}`` or ``$...$`` inside it unwrapped; an empty
    line takes the next one), the last balanced ``\\boxed{...}``, the whole reply when it is nothing but an
    answer (one short line such as ``42``, ``3/4``, ``2x + 2``), then ``fallback``: ``"last_number"``
    (the last number-like token) or ``"none"``. Only the last 2,000 characters are read.
    """
    if fallback not in ("last_number", "none"):
        raise ValueError(f"fallback must be 'last_number' or 'none', got {fallback!r}")
    if not isinstance(reply, str):
        return None
    text = reply[-TAIL_CHARS:]
    found = _answer_line(text) or _last_boxed(text)
    if found:
        return found
    bare = text.strip()
    if _is_bare_answer(bare):
        return bare
    if fallback == "none":
        return None
    numbers = _NUMBER_TOKEN_RE.findall(text)
    return numbers[-1] if numbers else None


def _answer_line(text: str) -> str | None:
    last = None
    for last in _ANSWER_RE.finditer(text):
        pass
    if last is None:
        return None
    line, _, after = text[last.end() :].partition("\n")
    content = _clean_answer_text(line)
    if not content:  # "Answer:" alone on its line: the answer is on the next non-empty one
        content = _clean_answer_text(next((ln for ln in after.split("\n") if ln.strip()), ""))
    return content or None


def _clean_answer_text(line: str) -> str:
    boxed = _last_boxed(line)
    if boxed:
        return boxed
    spans = _MATH_SPAN_RE.findall(line)
    if spans:
        line = spans[-1][0] or spans[-1][1]
    return line.strip().strip("*_").strip().rstrip(".").strip()


def _last_boxed(text: str) -> str | None:
    if "box" not in text:
        return None
    closing: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i
    for match in reversed(list(_BOX_RE.finditer(text))):
        start = match.end() - 1
        if start in closing:
            return text[start + 1 : closing[start]].strip() or None
    return None


def _is_bare_answer(text: str) -> bool:
    if not text or len(text) > BARE_ANSWER_CHARS or "\n" in text:
        return False
    if any(word.lower() not in _NAMES for word in _WORD_RE.findall(text)):
        return False  # prose, not an answer
    return _prepare(text) is not None
