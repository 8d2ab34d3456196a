"""Deciding equality: exactly, then numerically at sample points, then symbolically (``answers_match``)."""

from __future__ import annotations

import cmath
import math
import time
import zlib

from envs.math_check.exact import _exact_equal, _rat
from envs.math_check.limits import MAX_RAW_CHARS, REL_TOL, Rational, Tree
from envs.math_check.normalise import _Answer, _normalised, _prepare, _Scalar
from envs.math_check.worker import _SYMBOLIC

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
