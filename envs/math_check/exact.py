"""Exact arithmetic on rational functions of the symbols: the fast path, no sympy."""

from __future__ import annotations

import math
from fractions import Fraction

from envs.math_check.limits import MAX_BITS, MAX_EXPONENT, MAX_TERM_PRODUCTS, REL_TOL, _OverBudget, Poly, Rational, _Reject, Tree

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
