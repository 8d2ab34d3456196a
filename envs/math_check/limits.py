"""Caps on what an answer may be, the tree and number types, and the two ways a check gives up."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

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
