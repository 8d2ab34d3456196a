"""The math env's procedural families: each generator maps (level, rng) to (problem text, gold answer).

Only integer arithmetic and Fraction: the gold answers are exact, and every one is checked by the rational
fast path of ``envs.math_check``. ``envs.math_env`` deals them out into splits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from math import gcd

import numpy as np

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonah", "Kai", "Lena",
         "Mateo", "Nora", "Omar", "Priya")  # fmt: skip
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells")


def _int(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(rng.integers(low, high + 1))


def _nonzero(rng: np.random.Generator, low: int, high: int) -> int:
    value = 0
    while value == 0:
        value = _int(rng, low, high)
    return value


def _terms_text(terms: Sequence[tuple[int, str]]) -> str:
    """A sum of (coefficient, monomial) terms: [(3, "x^2"), (-1, "x"), (5, "")] -> "3x^2 - x + 5"."""
    text = ""
    for coefficient, monomial in terms:
        if coefficient == 0:
            continue
        magnitude = abs(coefficient)
        body = monomial if magnitude == 1 and monomial else f"{magnitude}{monomial}"
        if not text:
            text = f"-{body}" if coefficient < 0 else body
        else:
            text += f" - {body}" if coefficient < 0 else f" + {body}"
    return text or "0"


def _poly_text(coefficients: Sequence[int]) -> str:
    """A polynomial in x from its coefficients, constant first: [5, -2, 0, 3] -> "3x^3 - 2x + 5"."""
    monomials = ["", "x"] + [f"x^{power}" for power in range(2, len(coefficients))]
    return _terms_text([(coefficients[p], monomials[p]) for p in reversed(range(len(coefficients)))])


def _poly_mul(p: Sequence[int], q: Sequence[int]) -> list[int]:
    out = [0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _poly_derivative(p: Sequence[int]) -> list[int]:
    return [power * p[power] for power in range(1, len(p))] or [0]


def _roots_text(roots: Sequence[Fraction]) -> str:
    return ", ".join(str(root) for root in sorted(roots))


def _arithmetic(level: int, rng: np.random.Generator) -> tuple[str, str]:
    if level == 1:
        a, b, op = _int(rng, 2, 99), _int(rng, 2, 99), _int(rng, 0, 2)
        return f"What is {a} {'+-×'[op]} {b}?", str((a + b, a - b, a * b)[op])
    if level == 2:
        a, b, c = (_int(rng, 2, 30) for _ in range(3))
        forms = ((f"{a} + {b} × {c}", a + b * c), (f"({a} + {b}) × {c}", (a + b) * c),
                 (f"{a} × {b} - {c}", a * b - c), (f"{a} - {b} × {c}", a - b * c))  # fmt: skip
    else:
        a, b, c, d, e = (_int(rng, 2, 20) for _ in range(5))
        forms = ((f"({a} - {b}) × ({c} + {d}) - {e}^2", (a - b) * (c + d) - e**2),
                 (f"{a * e} ÷ {e} + {c} × ({d} - {b})", a + c * (d - b)),
                 (f"-{a} × ({b} - {c})^2 + {d} × {e}", -a * (b - c) ** 2 + d * e))  # fmt: skip
    text, value = forms[_int(rng, 0, len(forms) - 1)]
    return f"Compute {text}.", str(value)


def _addition(level: int, rng: np.random.Generator) -> tuple[str, str]:
    """Sums only: two two-digit numbers (level 1), three (level 2), two three-digit numbers (level 3)."""
    count, low, high = ((2, 10, 99), (3, 10, 99), (2, 100, 999))[level - 1]
    terms = [_int(rng, low, high) for _ in range(count)]
    return f"What is {' + '.join(map(str, terms))}?", str(sum(terms))


def _word_problems(level: int, rng: np.random.Generator) -> tuple[str, str]:
    name, item = NAMES[_int(rng, 0, len(NAMES) - 1)], ITEMS[_int(rng, 0, len(ITEMS) - 1)]
    first_form = _int(rng, 0, 1) == 0
    if level == 1 and first_form:
        had, bought = _int(rng, 5, 60), _int(rng, 2, 40)
        given = _int(rng, 1, had + bought - 1)
        return (f"{name} has {had} {item}. {name} buys {bought} more and then gives {given} to a friend. "
                f"How many {item} does {name} have now?", str(had + bought - given))  # fmt: skip
    if level == 1:
        had, bags, per_bag = _int(rng, 1, 30), _int(rng, 2, 12), _int(rng, 3, 15)
        return (f"{name} already has {had} {item} and buys {bags} bags with {per_bag} {item} in each bag. "
                f"How many {item} does {name} have in total?", str(had + bags * per_bag))  # fmt: skip
    if level == 2 and first_form:
        packs, per_pack, friends = _int(rng, 3, 9), _int(rng, 4, 12), _int(rng, 2, 6)
        total = packs * per_pack
        kept = total % friends + friends * _int(rng, 0, 2)
        if not 0 < kept < total:
            kept = total % friends or friends
        return (f"{name} buys {packs} packs of {item} with {per_pack} in each pack, keeps {kept} and shares "
                f"the rest equally among {friends} friends. How many {item} does each friend get?",
                str((total - kept) // friends))  # fmt: skip
    if level == 2:
        wage, hours, weeks = _int(rng, 8, 25), _int(rng, 5, 20), _int(rng, 2, 6)
        spent = _int(rng, 1, wage * hours * weeks - 1)
        return (f"{name} earns ${wage} per hour and works {hours} hours each week. After {weeks} weeks, "
                f"{name} spends ${spent}. How many dollars does {name} have left?",
                str(wage * hours * weeks - spent))  # fmt: skip
    if first_form:
        bundle, single = _int(rng, 3, 6), _int(rng, 2, 9)
        bundle_price = _int(rng, single + 1, bundle * single - 1)  # a bundle is the cheaper way
        bundles, singles = _int(rng, 1, 6), _int(rng, 0, bundle - 1)
        cost = bundles * bundle_price + singles * single
        paid = (cost // 50 + 1) * 50
        return (f"A shop sells {item} for ${single} each or ${bundle_price} for a bundle of {bundle}. "
                f"{name} buys {bundles * bundle + singles} {item}, using as many bundles as possible, and "
                f"pays with ${paid}. How many dollars of change does {name} get?",
                str(paid - cost))  # fmt: skip
    monday, fewer, left = _int(rng, 5, 40), _int(rng, 1, 10), _int(rng, 1, 150)
    pages = monday + 2 * monday + (2 * monday - fewer) + left
    return (f"{name} reads {monday} pages of a {pages}-page book on Monday, twice as many on Tuesday, and "
            f"{fewer} fewer pages on Wednesday than on Tuesday. How many pages are left?",
            str(left))  # fmt: skip


def _fraction(rng: np.random.Generator, max_denominator: int, positive: bool = False) -> Fraction:
    """A fraction that is not an integer, with denominator at most ``max_denominator``."""
    value = Fraction(1)
    while value.denominator == 1:
        denominator = _int(rng, 2, max_denominator)
        value = Fraction(_int(rng, 1 if positive else 1 - denominator, 2 * denominator - 1), denominator)
    return value


def _sum_text(a: Fraction, b: Fraction) -> str:
    """a + b written without "+ -": "1/2 - 3/4" for 1/2 + (-3/4)."""
    return f"{a} - {-b}" if b < 0 else f"{a} + {b}"


def _fractions(level: int, rng: np.random.Generator) -> tuple[str, str]:
    suffix = " Give the answer as a fraction in lowest terms or an integer."
    if level == 1:
        a, b, op = _fraction(rng, 9, positive=True), _fraction(rng, 9, positive=True), _int(rng, 0, 1)
        return f"Compute {_sum_text(a, b if op == 0 else -b)}.{suffix}", str(a + b if op == 0 else a - b)
    if level == 2:
        a, b, c = (_fraction(rng, 12) for _ in range(3))
        forms = ((f"({a}) × ({b})", a * b), (f"({a}) ÷ ({b})", a / b), (f"{a} + ({b}) × ({c})", a + b * c))
        text, value = forms[_int(rng, 0, 2)]
        return f"Compute {text}.{suffix}", str(value)
    a, b, c, d = (_fraction(rng, 12) for _ in range(4))
    while c == d:
        d = _fraction(rng, 12)
    return f"Compute ({_sum_text(a, b)}) ÷ ({_sum_text(c, -d)}).{suffix}", str((a + b) / (c - d))


def _linear_equations(level: int, rng: np.random.Generator) -> tuple[str, str]:
    if level == 1:
        x, a, b = _int(rng, -12, 12), _nonzero(rng, -9, 9), _nonzero(rng, -20, 20)
        return f"Solve for x: {_poly_text([b, a])} = {a * x + b}.", str(x)
    if level == 2:
        a, b, c, d = _nonzero(rng, -9, 9), _int(rng, -20, 20), _nonzero(rng, -9, 9), _int(rng, -20, 20)
        while c == a:
            c = _nonzero(rng, -9, 9)
        return f"Solve for x: {_poly_text([b, a])} = {_poly_text([d, c])}.", str(Fraction(d - b, a - c))
    x, y = _int(rng, -9, 9), _int(rng, -9, 9)
    a, b, c, d = (_nonzero(rng, -6, 6) for _ in range(4))
    while a * d == b * c:
        d = _nonzero(rng, -6, 6)
    first, second = _terms_text([(a, "x"), (b, "y")]), _terms_text([(c, "x"), (d, "y")])
    return (f"Solve the system of equations {first} = {a * x + b * y} and {second} = {c * x + d * y}. "
            f"Give the answer as an ordered pair (x, y).", f"({x}, {y})")  # fmt: skip


def _polynomial_roots(level: int, rng: np.random.Generator) -> tuple[str, str]:
    if level == 1:  # roots in -12..12: 300 distinct quadratics (-9..9, before Math-v1, had only 171)
        r, s = _int(rng, -12, 12), _int(rng, -12, 12)
        while s == r:
            s = _int(rng, -12, 12)
        poly, roots = _poly_mul([-r, 1], [-s, 1]), [Fraction(r), Fraction(s)]
    elif level == 2:
        a, p, r = _int(rng, 2, 5), _nonzero(rng, -9, 9), _int(rng, -9, 9)
        while gcd(a, p) != 1:
            p = _nonzero(rng, -9, 9)
        poly, roots = _poly_mul([-p, a], [-r, 1]), [Fraction(p, a), Fraction(r)]  # p/a is never an integer
    else:
        distinct: set[int] = set()
        while len(distinct) < 3:
            distinct.add(_int(rng, -6, 6))
        poly, roots = [1], [Fraction(root) for root in distinct]
        for root in distinct:
            poly = _poly_mul(poly, [-root, 1])
    return (f"Find all real solutions of {_poly_text(poly)} = 0. List them separated by commas.",
            _roots_text(roots))  # fmt: skip


def _derivatives(level: int, rng: np.random.Generator) -> tuple[str, str]:
    if level == 1:
        degree = _int(rng, 2, 3)
        poly = [_int(rng, -9, 9) for _ in range(degree)] + [_nonzero(rng, -9, 9)]
        return f"Find the derivative f'(x) of f(x) = {_poly_text(poly)}.", _poly_text(_poly_derivative(poly))
    if level == 2:
        linear = [_nonzero(rng, -9, 9), _nonzero(rng, -6, 6)]
        quadratic = [_nonzero(rng, -9, 9), 0, _nonzero(rng, -6, 6)]
        derivative = _poly_derivative(_poly_mul(linear, quadratic))
        return (f"Find the derivative f'(x) of f(x) = ({_poly_text(linear)})({_poly_text(quadratic)}). "
                f"Expand your answer.", _poly_text(derivative))  # fmt: skip
    inner, n, x0 = [_nonzero(rng, -6, 6), 0, _nonzero(rng, -4, 4)], _int(rng, 2, 3), _nonzero(rng, -3, 3)
    poly = [1]
    for _ in range(n):
        poly = _poly_mul(poly, inner)
    slope = sum(coefficient * x0**power for power, coefficient in enumerate(_poly_derivative(poly)))
    return f"Let f(x) = ({_poly_text(inner)})^{n}. Compute f'({x0}).", str(slope)


GENERATORS: dict[str, Callable[[int, np.random.Generator], tuple[str, str]]] = {
    "arithmetic": _arithmetic,
    "word_problems": _word_problems,
    "fractions": _fractions,
    "linear_equations": _linear_equations,
    "polynomial_roots": _polynomial_roots,
    "derivatives": _derivatives,
    "addition": _addition,
}
