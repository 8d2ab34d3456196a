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

The parts, one module each: ``extract`` (the answer out of a reply), ``normalise`` (LaTeX, units, percent,
containers), ``parse`` (text to a tree), ``exact`` (rational functions), ``compare`` (the order above),
``worker`` (sympy in a child process), ``limits`` (the caps).
"""

from envs.math_check.compare import answers_match
from envs.math_check.extract import extract_answer
from envs.math_check.limits import TAIL_CHARS

__all__ = ["TAIL_CHARS", "answers_match", "extract_answer"]
