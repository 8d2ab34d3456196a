"""Normalising an answer: LaTeX to plain text, units, percent, thousands, ``x = ...``, containers."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from envs.math_check.exact import _exact_value
from envs.math_check.limits import MAX_CHARS, MAX_ELEMENTS, MAX_RAW_CHARS, Rational, _Reject, Tree
from envs.math_check.parse import _NAMES, _Parser, _tokenize

_FRAC_COMMANDS = frozenset({"frac", "dfrac", "tfrac", "cfrac"})
_LATEX_WORDS = {
    **{name: name for name in _NAMES if name not in ("sqrt", "abs", "asin", "acos", "atan")},
    "cdot": "*",
    "times": "*",
    "ast": "*",
    "div": "/",
    "varepsilon": "epsilon",
    "vartheta": "theta",
    "varphi": "phi",
}
_UNICODE = str.maketrans({
    "−": "-", "–": "-", "×": "*", "·": "*", "÷": "/", "≈": "=", "²": "^2", "³": "^3",
    "π": r"\pi", "√": r"\sqrt",
})  # fmt: skip
_DROP_RE = re.compile(r"\\[!,]|\\(?:left|right|[bB]ig[lr]?)\b\.?|\\displaystyle|\\[()\[\]]")
_SPACE_RE = re.compile(r"\\[;: ]|\\q?quad\b|~")
_UNWRAP_RE = re.compile(r"\\(?:boxed|text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\\degree\b|°")
_SEPARATOR_RE = re.compile(r"\s+(?:or|and)\s+")
_PERCENT_WORD_RE = re.compile(r"\s*\bpercent\b")
_THOUSANDS_RE = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_LHS_RE = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?'*(?:\(\s*[A-Za-z]\s*\))?\s*(?:=|\\approx\b)\s*(?=\S)")
_UNIT_RE = re.compile(r"\s*\b([A-Za-z]{2,})(?:\s*\^\s*\{?\s*[23]\s*\}?|[23])?\.?\s*$")
_COMMAND_RE = re.compile(r"\\([A-Za-z]+|.)")
_BRACKETS = {"(": ")", "[": "]", "{": "}"}


class _Scalar(NamedTuple):
    tree: Tree
    exact: Rational | None  # None when not a rational function
    percent: bool
    decimal: bool


class _Answer(NamedTuple):
    kind: str  # "scalar", "(", "[", "{" or "list"
    items: tuple[_Scalar, ...]


@lru_cache(maxsize=8192)
def _normalised(text: str) -> str | None:
    """``text`` with delimiters, spacing, wrappers, degrees and currency removed; None when malformed."""
    if len(text) > MAX_RAW_CHARS:
        return None
    s = text.translate(_UNICODE).replace("\\$", "").replace("$", " ").replace("\\%", "%")
    s = _SPACE_RE.sub(" ", _DROP_RE.sub("", s))
    s = s.replace("\\{", "{").replace("\\}", "}").replace("{,}", ",")
    try:
        s = _unwrap(s)
    except _Reject:
        return None
    s = _DEGREE_RE.sub("", s)
    s = _PERCENT_WORD_RE.sub("%", _SEPARATOR_RE.sub(", ", s))
    return " ".join(s.split()).strip(" .;")


def _unwrap(s: str) -> str:
    r"""Replace ``\boxed{X}``, ``\text{X}``... by X (balanced braces)."""
    while match := _UNWRAP_RE.search(s):
        close = _closing(s, match.end() - 1)
        s = f"{s[: match.start()]} {s[match.end() : close]} {s[close + 1 :]}"
    return s


def _closing(s: str, start: int) -> int:
    """Index of the bracket closing the one at ``start``."""
    opener, closer, depth = s[start], _BRACKETS[s[start]], 0
    for i in range(start, len(s)):
        if s[i] == opener:
            depth += 1
        elif s[i] == closer:
            depth -= 1
            if depth == 0:
                return i
    raise _Reject("unbalanced brackets")


def _split_top(s: str) -> list[str]:
    """Split at commas outside any brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [part.strip() for part in parts]


@lru_cache(maxsize=8192)
def _prepare(text: str) -> _Answer | None:
    """The parsed answer in ``text``, or None when it is malformed or over a cap."""
    s = _normalised(text)
    if not s:
        return None
    try:
        kind, parts = _structure(_LHS_RE.sub("", s, count=1))
        if len(parts) > MAX_ELEMENTS or not all(parts):
            return None
        return _Answer(kind, tuple(_scalar(part) for part in parts))
    except (_Reject, RecursionError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _structure(s: str) -> tuple[str, list[str]]:
    if s and s[0] in _BRACKETS and s[-1] == _BRACKETS[s[0]] and _closing(s, 0) == len(s) - 1:
        parts = _split_top(s[1:-1])
        if len(parts) > 1:
            return s[0], parts
    parts = _split_top(_THOUSANDS_RE.sub(lambda m: m.group().replace(",", ""), s))
    return ("list", parts) if len(parts) > 1 else ("scalar", parts)


def _scalar(part: str) -> _Scalar:
    part = _LHS_RE.sub("", part, count=1).strip()
    percent = part.endswith("%")
    part = part.rstrip("%").strip()
    while (unit := _UNIT_RE.search(part)) and unit.start() > 0 and unit.group(1).lower() not in _NAMES:
        part = part[: unit.start()]
    plain = _latex_to_plain(part, 0)
    if len(plain) > MAX_CHARS:
        raise _Reject("too long")
    tree, decimal = _Parser(_tokenize(plain)).parse()
    return _Scalar(tree, _exact_value(tree), percent, decimal)


def _latex_to_plain(s: str, depth: int) -> str:
    r"""Rewrite LaTeX (``\frac``, ``\sqrt``, ``\pi``, ``\cdot``, braces) as plain infix text."""
    if depth > 40:
        raise _Reject("too deep")
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            match = _COMMAND_RE.match(s, i)
            if match is None:
                raise _Reject("stray backslash")
            name, i = match.group(1), match.end()
            if name in _FRAC_COMMANDS:
                top, i = _latex_argument(s, i, depth)
                bottom, i = _latex_argument(s, i, depth)
                out.append(f"(({top})/({bottom}))")
            elif name == "sqrt":
                i = len(s) - len(s[i:].lstrip())
                index = None
                if s.startswith("[", i):
                    close = _closing(s, i)
                    index, i = _latex_to_plain(s[i + 1 : close], depth + 1), close + 1
                radicand, i = _latex_argument(s, i, depth)
                out.append(f"sqrt({radicand})" if index is None else f"(({radicand})^(1/({index})))")
            elif name in _LATEX_WORDS:
                out.append(f" {_LATEX_WORDS[name]} ")
            else:
                raise _Reject(f"unsupported command \\{name}")
        elif ch == "{":
            close = _closing(s, i)
            out.append(f"({_latex_to_plain(s[i + 1 : close], depth + 1)})")
            i = close + 1
        elif ch == "}":
            raise _Reject("unbalanced braces")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _latex_argument(s: str, i: int, depth: int) -> tuple[str, int]:
    """One argument of a LaTeX command: a braced or parenthesised group or one character (``\\frac12``)."""
    while i < len(s) and s[i].isspace():
        i += 1
    if i < len(s) and s[i] in "{(":
        close = _closing(s, i)
        return _latex_to_plain(s[i + 1 : close], depth + 1), close + 1
    if i < len(s) and s[i].isalnum():
        return s[i], i + 1
    raise _Reject("missing argument")
