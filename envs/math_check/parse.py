"""The restricted recursive-descent parser: plain text to a tree of tuples, within the caps."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from envs.math_check.limits import MAX_DIGITS, MAX_EXPONENT, MAX_FRAMES, MAX_NODES, MAX_POWER_NESTING, _Reject, Tree

_FUNCTIONS = frozenset(
    "sqrt sin cos tan sec csc cot arcsin arccos arctan asin acos atan sinh cosh tanh log ln exp abs".split()
)
_GREEK = frozenset("alpha beta gamma delta epsilon theta lambda mu phi psi rho sigma tau omega".split())
_NAMES = _FUNCTIONS | _GREEK | {"pi"}
_NAME_LENGTHS = sorted({len(name) for name in _NAMES}, reverse=True)


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
