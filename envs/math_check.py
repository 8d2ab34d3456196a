"""Safe math answer checking: read the final answer out of a reply, decide whether it equals the gold.

Model output is untrusted, so no text is ever evaluated or handed to ``sympify``. An answer goes through a
normaliser (LaTeX, units, percent, thousands separators, ``x = ...``) and a small recursive-descent parser
that accepts numbers, ``+ - * / ^`` (and ``**``), implicit multiplication, parentheses, a whitelist of
functions (sqrt, sin, cos, tan, sec, csc, cot, arcsin, arccos, arctan, sinh, cosh, tanh, log = ln, exp,
abs), the constants pi and e, single-letter and Greek-letter symbols. It builds a tree of tuples; anything
else, and anything over the caps below, makes the answer wrong (False), never an exception.

Equality is decided in order of cost:

1. exactly, in-process, when both sides are rational functions of their symbols (integers, fractions,
   decimals, polynomials, quotients of polynomials): the common case, no sympy, tens of microseconds;
2. otherwise numerically at three fixed sample points (a quick reject), then symbolically by sympy in a
   worker process (``python -m envs.math_check``) that is killed when it overruns ``timeout``; a warm
   spare takes its place. The first symbolic check of a process also waits for the worker to start
   (about 0.5 s); every later call returns within about ``timeout``.

Rules:

- Decimals: when either side is written with a decimal point (or ``1e-3``) numbers match within a relative
  1e-6; otherwise rationals must be exactly equal.
- Percent: when exactly one side ends in ``%``, its number p matches p or p/100, so ``50%`` matches
  ``50``, ``0.5`` and ``1/2``; when both do, the numbers are compared.
- Thousands: a comma followed by exactly three digits is a separator (``1,234`` is 1234), except inside
  brackets, where commas separate elements (``(1,234)`` is a pair).
- Containers: ``(a, b)`` and ``[a, b]`` are ordered (the bracket kinds must agree), ``{a, b}`` is
  unordered (compared as a multiset); a bare list ``a, b`` (or ``a or b``) is unordered against a set or
  another bare list and ordered against a tuple.
- ``x = 3``, ``f'(x) = 2x``: the right-hand side is the answer. ``$``, ``\\text{}``, ``^\\circ``, ``°`` and
  trailing unit words (``5 cm``, ``12 apples``) are dropped.
- ``log`` is the natural logarithm, ``e`` is Euler's number, ``i`` is a plain symbol; two numbers in a row
  (``2 1/2``, ``1 000``) are rejected rather than guessed at.
"""

from __future__ import annotations

import atexit
import cmath
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import zlib
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["answers_match", "extract_answer"]

TAIL_CHARS = 2_000  # extract_answer reads only the end of a reply
BARE_ANSWER_CHARS = 100  # a reply this short that parses as an answer is its own answer
MAX_RAW_CHARS = 1_000  # longer answers are wrong before any work
MAX_CHARS = 256  # per element, after normalisation
MAX_DIGITS = 100  # per number literal
MAX_EXPONENT = 1_000  # |exponent| of a power or of 1e... notation, when it is a rational constant
MAX_POWER_NESTING = 2  # e^(x^2) is fine, a tower such as 9^9^9^9 is not
MAX_BITS = 4_096  # numerator/denominator size of any exact intermediate number
MAX_NODES = 200  # tree nodes per element
MAX_FRAMES = 200  # parser recursion (about 40 nested parentheses)
MAX_ELEMENTS = 20  # elements of a tuple, set or list
MAX_TERM_PRODUCTS = 20_000  # polynomial term multiplications per element before exact work gives up
REL_TOL = 1e-6
STARTUP_TIMEOUT = 60.0  # seconds a worker may take to import sympy
WORKER_MEMORY_BYTES = 2 * 1024**3

Tree = tuple[Any, ...]  # ("n", p, q) | ("s", name) | ("c", "pi"|"e") | ("neg", t) | ("f", fn, t) | (op, t, t)
# A polynomial maps monomials (sorted ((symbol, power), ...) tuples; () is the constant) to nonzero
# Fraction coefficients. A rational function is (numerator, denominator), the denominator 1 when possible.
Poly = dict[tuple[tuple[str, int], ...], Fraction]
Rational = tuple[Poly, Poly]


class _Reject(Exception):
    """The answer is malformed or too big: it is simply wrong."""


class _OverBudget(Exception):
    """Exact polynomial work would exceed its budget: decide another way."""


# -- extraction -------------------------------------------------------------------------------------

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


# -- normalisation ----------------------------------------------------------------------------------

_FUNCTIONS = frozenset(
    "sqrt sin cos tan sec csc cot arcsin arccos arctan asin acos atan sinh cosh tanh log ln exp abs".split()
)
_GREEK = frozenset("alpha beta gamma delta epsilon theta lambda mu phi psi rho sigma tau omega".split())
_NAMES = _FUNCTIONS | _GREEK | {"pi"}
_NAME_LENGTHS = sorted({len(name) for name in _NAMES}, reverse=True)
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


# -- parsing ----------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\s*(?:((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|([A-Za-z]+)|(\*\*|[-+*/^()\[\]]))")


def _tokenize(s: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    s, pos = s.strip(), 0
    while pos < len(s):
        match = _TOKEN_RE.match(s, pos)
        if match is None:
            raise _Reject(f"unexpected character {s[pos]!r}")
        pos = match.end()
        number, word, op = match.groups()
        if number:
            if len(number) > MAX_DIGITS or (tokens and tokens[-1][0] == "num"):
                raise _Reject("number too long, or two numbers in a row")
            tokens.append(("num", number))
        elif word:
            tokens.extend(("name", name) for name in _split_word(word))
        else:
            tokens.append(("op", {"**": "^", "[": "(", "]": ")"}.get(op, op)))
    return tokens


def _split_word(word: str) -> list[str]:
    """``sinx`` -> sin, x; ``2pir`` -> pi, r. Three single letters in a row look like prose: rejected."""
    names: list[str] = []
    i = singles = 0
    while i < len(word):
        for length in _NAME_LENGTHS:
            if word[i : i + length].lower() in _NAMES:
                names.append(word[i : i + length].lower())
                i, singles = i + length, 0
                break
        else:
            names.append(word[i])
            i, singles = i + 1, singles + 1
            if singles >= 3:
                raise _Reject(f"word {word!r}")
    return names


class _Parser:
    """Recursive descent over the tokens; builds a tree of tuples and counts nodes and frames."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.nodes = 0
        self.decimal = False
        self.exponent_level = 0

    def parse(self) -> tuple[Tree, bool]:
        if not self.tokens:
            raise _Reject("empty")
        tree = self.expr(0)
        if self.pos != len(self.tokens):
            raise _Reject("trailing tokens")
        return tree, self.decimal

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def node(self, *parts: Any) -> Tree:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Reject("too many nodes")
        return parts

    def expr(self, depth: int) -> Tree:
        if depth > MAX_FRAMES:
            raise _Reject("too deep")
        tree = self.term(depth + 1)
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = self.take()[1]
            rhs = self.term(depth + 1)
            tree = self.node("+", tree, rhs if sign == "+" else self.node("neg", rhs))
        return tree

    def term(self, depth: int) -> Tree:
        tree = self.factor(depth + 1)
        while True:
            kind, text = self.peek()
            if (kind, text) in (("op", "*"), ("op", "/")):
                self.take()
                tree = self.node(text, tree, self.factor(depth + 1))
            elif kind in ("num", "name") or (kind, text) == ("op", "("):  # implicit multiplication
                tree = self.node("*", tree, self.factor(depth + 1))
            else:
                return tree

    def factor(self, depth: int) -> Tree:
        if depth > MAX_FRAMES:
            raise _Reject("too deep")
        if self.peek() in (("op", "-"), ("op", "+")):
            sign = self.take()[1]
            inner = self.factor(depth + 1)
            return self.node("neg", inner) if sign == "-" else inner
        return self.power(depth + 1)

    def power(self, depth: int) -> Tree:
        base = self.atom(depth + 1)
        if self.peek() != ("op", "^"):
            return base
        self.take()
        self.exponent_level += 1
        if self.exponent_level > MAX_POWER_NESTING:
            raise _Reject("tower of powers")
        exponent = self.factor(depth + 1)  # right-associative
        self.exponent_level -= 1
        return self.node("^", base, exponent)

    def atom(self, depth: int) -> Tree:
        if depth > MAX_FRAMES:
            raise _Reject("too deep")
        kind, text = self.take()
        if kind == "num":
            return self.node("n", *_number(text, self))
        if kind == "name":
            if text in _FUNCTIONS:
                argument = self.atom(depth + 1) if self.peek() == ("op", "(") else self.power(depth + 1)
                return self.node("f", text, argument)
            if text in ("pi", "e"):
                return self.node("c", text)
            return self.node("s", text)
        if (kind, text) == ("op", "("):
            tree = self.expr(depth + 1)
            if self.take() != ("op", ")"):
                raise _Reject("unclosed parenthesis")
            return tree
        raise _Reject(f"unexpected {text or 'end'}")


def _number(text: str, parser: _Parser) -> tuple[int, int]:
    mantissa, _, exponent = text.lower().partition("e")
    if exponent and abs(int(exponent)) > MAX_EXPONENT:
        raise _Reject("exponent too large")
    if "." in text or exponent:
        parser.decimal = True
    value = Fraction(mantissa) * Fraction(10) ** int(exponent or 0)
    return value.numerator, value.denominator


# -- exact arithmetic on rational functions ---------------------------------------------------------

ONE: Poly = {(): Fraction(1)}


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_TERM_PRODUCTS

    def spend(self, products: int) -> None:
        if products > 1:  # constant arithmetic is bounded by MAX_BITS instead
            self.left -= products
            if self.left < 0:
                raise _OverBudget


def _check_bits(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise _Reject("number too large")
    return value


def _constant(p: Poly) -> Fraction | None:
    if not p:
        return Fraction(0)
    return p.get(()) if len(p) == 1 else None


def _padd(p: Poly, q: Poly) -> Poly:
    out = dict(p)
    for mono, coef in q.items():
        total = _check_bits(out.get(mono, 0) + coef)
        if total:
            out[mono] = total
        else:
            out.pop(mono, None)
    return out


def _pmul(p: Poly, q: Poly, budget: _Budget) -> Poly:
    budget.spend(len(p) * len(q))
    out: Poly = {}
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            if not m1 or not m2:
                mono = m1 or m2
            else:
                powers = dict(m1)
                for symbol, power in m2:
                    powers[symbol] = powers.get(symbol, 0) + power
                mono = tuple(sorted(powers.items()))
            out[mono] = out.get(mono, 0) + c1 * c2
    return {mono: _check_bits(coef) for mono, coef in out.items() if coef}


def _ppow(p: Poly, n: int, budget: _Budget) -> Poly:
    if n == 0:
        return ONE
    const = _constant(p)
    if const is not None:
        size = max(const.numerator.bit_length(), const.denominator.bit_length())
        if abs(const) != 1 and const != 0 and size * n > MAX_BITS:
            raise _Reject("power too large")
        return {(): const**n} if const else {}
    result, base = ONE, p
    while n:
        if n & 1:
            result = _pmul(result, base, budget)
        n >>= 1
        if n:
            base = _pmul(base, base, budget)
    return result


def _rat(num: Poly, den: Poly) -> Rational:
    if not den:
        raise _Reject("division by zero")
    const = _constant(den)
    if const is not None and const != 1:
        return {mono: _check_bits(coef / const) for mono, coef in num.items()}, ONE
    return num, den


def _exact_value(tree: Tree) -> Rational | None:
    """``tree`` as an exact rational function, or None when it is not one (or too costly to expand).

    Every node is visited even when the answer is None, so the size caps on constants (huge powers,
    ``9^9^9^9``) reject the tree wherever they occur.
    """
    return _exact(tree, _Budget())


def _exact(node: Tree, budget: _Budget) -> Rational | None:
    kind = node[0]
    if kind == "n":
        return ({(): Fraction(node[1], node[2])} if node[1] else {}), ONE
    if kind == "s":
        return {((node[1], 1),): Fraction(1)}, ONE
    if kind == "c":
        return None
    if kind == "neg":
        inner = _exact(node[1], budget)
        return None if inner is None else ({mono: -coef for mono, coef in inner[0].items()}, inner[1])
    if kind == "f":
        return _exact_function(node[1], _exact(node[2], budget))
    a, b = _exact(node[1], budget), _exact(node[2], budget)
    try:
        if kind == "^":
            return _exact_power(a, b, budget)
        if a is None or b is None:
            return None
        (an, ad), (bn, bd) = a, b
        if kind == "+":
            if ad == bd:
                return _rat(_padd(an, bn), ad)
            return _rat(_padd(_pmul(an, bd, budget), _pmul(bn, ad, budget)), _pmul(ad, bd, budget))
        if kind == "*":
            return _rat(_pmul(an, bn, budget), _pmul(ad, bd, budget))
        return _rat(_pmul(an, bd, budget), _pmul(ad, bn, budget))  # "/"
    except _OverBudget:
        return None


def _exact_power(a: Rational | None, b: Rational | None, budget: _Budget) -> Rational | None:
    exponent = _constant(b[0]) if b is not None and b[1] == ONE else None
    if exponent is None:
        return None
    if abs(exponent) > MAX_EXPONENT:
        raise _Reject("exponent too large")
    if a is None:
        return None
    num, den = a
    if exponent.denominator == 1:
        n = int(exponent)
        if n < 0:
            num, den, n = den, num, -n
        return _rat(_ppow(num, n, budget), _ppow(den, n, budget))
    if exponent.denominator == 2 and den == ONE:  # exact square roots of constants: 4^(1/2), (9/4)^(3/2)
        root = _exact_function("sqrt", a)
        if root is not None:
            return _exact_power(root, ({(): Fraction(exponent.numerator)}, ONE), budget)
    return None


def _exact_function(name: str, arg: Rational | None) -> Rational | None:
    const = _constant(arg[0]) if arg is not None and arg[1] == ONE else None
    if const is None:
        return None
    if name == "abs":
        return ({(): abs(const)} if const else {}), ONE
    if name == "sqrt" and const >= 0:
        top, bottom = math.isqrt(const.numerator), math.isqrt(const.denominator)
        if top * top == const.numerator and bottom * bottom == const.denominator:
            return ({(): Fraction(top, bottom)} if top else {}), ONE
    return None


def _exact_equal(a: Rational, b: Rational, decimal: bool) -> bool | None:
    """Exact comparison; relative tolerance for constants when a decimal was written. None: too costly."""
    try:
        budget = _Budget()
        if _pmul(a[0], b[1], budget) == _pmul(b[0], a[1], budget):
            return True
    except (_OverBudget, _Reject):
        return None
    x, y = _constant(a[0]), _constant(b[0])
    if decimal and a[1] == ONE and b[1] == ONE and x is not None and y is not None:
        return abs(x - y) <= REL_TOL * max(abs(x), abs(y))
    return False


# -- numeric and symbolic comparison ----------------------------------------------------------------

_CMATH = {
    "sqrt": cmath.sqrt,
    "sin": cmath.sin,
    "cos": cmath.cos,
    "tan": cmath.tan,
    "sec": lambda z: 1 / cmath.cos(z),
    "csc": lambda z: 1 / cmath.sin(z),
    "cot": lambda z: 1 / cmath.tan(z),
    "arcsin": cmath.asin,
    "arccos": cmath.acos,
    "arctan": cmath.atan,
    "asin": cmath.asin,
    "acos": cmath.acos,
    "atan": cmath.atan,
    "sinh": cmath.sinh,
    "cosh": cmath.cosh,
    "tanh": cmath.tanh,
    "log": cmath.log,
    "ln": cmath.log,
    "exp": cmath.exp,
    "abs": lambda z: complex(abs(z)),
}
# Symbols take pseudo-random values in [low, low + width) at each sample point: small and larger values,
# so that high powers overflow at some points only.
SAMPLE_RANGES = ((0.2, 0.5), (0.7, 0.5), (1.2, 1.0))
TINY = 1e-9  # a point where both sides are this close to zero tells nothing (underflow, sin(pi))


def _numeric(node: Tree, point: int) -> complex:
    """``node`` evaluated in floating point at sample point ``point`` (an index into SAMPLE_RANGES)."""
    kind = node[0]
    if kind == "n":
        value = complex(node[1] / node[2])
    elif kind == "s":
        low, width = SAMPLE_RANGES[point]
        value = complex(low + width * (zlib.crc32(f"{point}:{node[1]}".encode()) % 1000) / 1000)
    elif kind == "c":
        value = complex(math.pi if node[1] == "pi" else math.e)
    elif kind == "neg":
        value = -_numeric(node[1], point)
    elif kind == "f":
        value = _CMATH[node[1]](_numeric(node[2], point))
    else:
        a, b = _numeric(node[1], point), _numeric(node[2], point)
        value = a + b if kind == "+" else a * b if kind == "*" else a / b if kind == "/" else a**b
    if not cmath.isfinite(value):
        raise OverflowError
    return value


def _numeric_agreement(a: Tree, b: Tree) -> bool | None:
    """False when the two differ at some sample point; True when they agree at every point where both
    evaluate; None when they evaluate at none."""
    compared = 0
    for point in range(len(SAMPLE_RANGES)):
        try:
            x, y = _numeric(a, point), _numeric(b, point)
        except (ArithmeticError, ValueError):
            continue
        scale = max(abs(x), abs(y))
        if scale < TINY:
            continue
        if abs(x - y) > REL_TOL * scale:
            return False
        compared += 1
    return True if compared else None


def _values_match(
    a: Tree, exact_a: Rational | None, b: Tree, exact_b: Rational | None, decimal: bool, deadline: float
) -> bool:
    if exact_a is not None and exact_b is not None:
        exact = _exact_equal(exact_a, exact_b, decimal)
        if exact is not None:
            return exact
    agreement = _numeric_agreement(a, b)
    if agreement is False:
        return False
    if agreement and decimal:
        return True
    return _SYMBOLIC.equal(a, b, deadline)


def _scale_percent(item: _Scalar) -> tuple[Tree, Rational | None]:
    tree = ("/", item.tree, ("n", 100, 1))
    if item.exact is None:
        return tree, None
    return tree, _rat({mono: coef / 100 for mono, coef in item.exact[0].items()}, item.exact[1])


def _scalars_match(a: _Scalar, b: _Scalar, deadline: float) -> bool:
    decimal = a.decimal or b.decimal
    if _values_match(a.tree, a.exact, b.tree, b.exact, decimal, deadline):
        return True
    if a.percent == b.percent:
        return False
    if a.percent:
        return _values_match(*_scale_percent(a), b.tree, b.exact, decimal, deadline)
    return _values_match(a.tree, a.exact, *_scale_percent(b), decimal, deadline)


def _answers_equal(a: _Answer, b: _Answer, deadline: float) -> bool:
    if len(a.items) != len(b.items):
        return False
    if a.kind == "scalar" or b.kind == "scalar":
        return a.kind == b.kind and _scalars_match(a.items[0], b.items[0], deadline)
    ordered = {a.kind, b.kind} & {"(", "["}
    if ordered:
        if len({a.kind, b.kind} - {"list"}) != 1:  # "(" vs "[" or a tuple vs a set
            return False
        return all(_scalars_match(x, y, deadline) for x, y in zip(a.items, b.items))
    unused = list(b.items)  # unordered: greedy multiset matching
    for x in a.items:
        match = next((i for i, y in enumerate(unused) if _scalars_match(x, y, deadline)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def answers_match(candidate: str, gold: str, *, timeout: float = 1.0) -> bool:
    """Whether ``candidate`` is mathematically equal to ``gold`` (see the module docstring for the rules).

    Never raises: malformed, oversized or too slow answers are False. The call returns within about
    ``timeout`` seconds: the exact and numeric steps are bounded by the size caps (microseconds to
    milliseconds), the symbolic step gets what is left. Only the first symbolic check of a process also
    waits for the worker to start.
    """
    deadline = time.monotonic() + timeout
    try:
        if not isinstance(candidate, str) or not isinstance(gold, str) or len(candidate) > MAX_RAW_CHARS:
            return False
        if candidate.strip() == gold.strip():
            return bool(candidate.strip())
        normal_candidate, normal_gold = _normalised(candidate), _normalised(gold)
        if normal_candidate and normal_candidate == normal_gold:
            return True
        a, b = _prepare(candidate), _prepare(gold)
        if a is None or b is None:
            return False
        return _answers_equal(a, b, deadline)
    except Exception:  # noqa: BLE001 - untrusted input: whatever goes wrong, the answer is not right
        return False


# -- the sympy worker -------------------------------------------------------------------------------


class _Worker:
    """A ``python -m envs.math_check`` child: reads ``[tree, tree]`` JSON lines, answers "1" or "0"."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[__name__.count(".")]
        path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ready = False
        self.failed = False  # dead or overran: to be replaced
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def ask(self, job: str, deadline: float, grace: bool) -> bool | None:
        """The verdict on ``job``, or None when there is none by ``deadline`` (a ``time.monotonic``
        time; with ``grace`` the worker's start-up does not count). A worker still starting is left to
        start; one that dies or overruns is marked ``failed``."""
        try:
            if not self.ready:
                started = time.monotonic()
                line = self.lines.get(timeout=STARTUP_TIMEOUT if grace else max(deadline - started, 0.0))
                self.ready = line == "ready"
                if not self.ready:
                    self.failed = True
                    return None
                if grace:
                    deadline += time.monotonic() - started
            assert self.process.stdin is not None
            self.process.stdin.write(job + "\n")
            self.process.stdin.flush()
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except (queue.Empty, OSError):
            self.failed = self.failed or self.ready or grace
            return None
        verdict = {"1": True, "0": False}.get(line or "")
        self.failed = verdict is None
        return verdict

    def kill(self) -> None:
        self.process.kill()
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass


class _SymbolicChecker:
    """Sends symbolic jobs to a worker, one at a time. A spare starts with the first worker, so a worker
    killed for overrunning is replaced by a warm one. Only the first job of a process waits for a start-up
    beyond its deadline; later, a replacement that is still starting simply gives no verdict (False)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._active: _Worker | None = None
        self._spare: _Worker | None = None
        self._first_job = True

    def equal(self, a: Tree, b: Tree, deadline: float) -> bool:
        job = json.dumps([a, b])
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share its parent's pipes
                self._pid, self._active, self._spare, self._first_job = os.getpid(), None, None, True
            if time.monotonic() >= deadline:
                return False
            if self._active is None:
                self._active, self._spare = _Worker(), _Worker()
            verdict = self._active.ask(job, deadline, grace=self._first_job)
            self._first_job = False
            if self._active.failed:
                self._active.kill()
                spare = self._spare
                self._active = spare if spare is not None and spare.process.poll() is None else _Worker()
                self._spare = _Worker()
            return bool(verdict)

    def close(self) -> None:
        with self._lock:
            for worker in (self._active, self._spare):
                if worker is not None and self._pid == os.getpid():
                    worker.kill()
            self._active = self._spare = None


_SYMBOLIC = _SymbolicChecker()
atexit.register(_SYMBOLIC.close)


def _to_sympy(node: list, sp: Any) -> Any:
    """Build a sympy expression from a parsed tree (constructors only, never from text)."""
    kind = node[0]
    if kind == "n":
        return sp.Rational(node[1], node[2])
    if kind == "s":
        return sp.Symbol(node[1])
    if kind == "c":
        return sp.pi if node[1] == "pi" else sp.E
    if kind == "neg":
        return -_to_sympy(node[1], sp)
    if kind == "f":
        return _sympy_function(node[1], sp)(_to_sympy(node[2], sp))
    a, b = _to_sympy(node[1], sp), _to_sympy(node[2], sp)
    return {"+": sp.Add, "*": sp.Mul, "^": sp.Pow}[kind](a, b) if kind != "/" else a / b


def _sympy_function(name: str, sp: Any) -> Any:
    functions = {
        "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc,
        "cot": sp.cot, "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "asin": sp.asin,
        "acos": sp.acos, "atan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
        "log": sp.log, "ln": sp.log, "exp": sp.exp, "abs": sp.Abs,
    }  # fmt: skip
    return functions[name]


def _serve() -> None:
    """Worker loop (``python -m envs.math_check``): one ``[tree, tree]`` JSON line in, "1"/"0" out."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # no address-space limit on this platform: the parent's timeout still bounds the job
    import sympy

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            a, b = (_to_sympy(tree, sympy) for tree in json.loads(line))
            difference = a - b
            equal = difference == 0 or sympy.simplify(difference) == 0 or difference.equals(0) is True
        except Exception:  # noqa: BLE001 - a job that sympy cannot handle is simply not equal
            equal = False
        print("1" if equal else "0", flush=True)


if __name__ == "__main__":
    _serve()
