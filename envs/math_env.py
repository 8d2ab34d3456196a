"""Single-turn math problems: procedural families at three difficulty levels, or a JSONL data set.

>>> env = MathEnv(families=["fractions"], level=1)
>>> problem, info = env.reset(options={"split": "test", "index": 0})
>>> env.step("Adding the fractions gives ...\\nAnswer: " + env.reference_solution()[0])[1]
1.0
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import gcd
from typing import Any, ClassVar

import numpy as np

from envs.base import SPLITS, TextEnv
from envs.math_check import TAIL_CHARS, answers_match, extract_answer

LEVELS: tuple[int, ...] = (1, 2, 3)
# Problems per (family, level) and split, in the order they are drawn. The first three blocks are the
# original pool (every task of it keeps its split); the later blocks enlarge the evaluation splits so
# that a 10-point difference can be resolved: every family and level has 100 test problems, and
# ``addition`` (the demo's env) 500 test and 200 validation. With all six families and three levels:
# train 2160, validation 216, test 1800.
SPLIT_BLOCKS: tuple[tuple[str, int], ...] = (("test", 30), ("validation", 12), ("train", 120), ("test", 70))
EXTRA_BLOCKS: dict[str, tuple[tuple[str, int], ...]] = {"addition": (("test", 400), ("validation", 188))}


def per_family_level(family: str) -> dict[str, int]:
    """Problems per split of one (family, level) of ``family``."""
    sizes = dict.fromkeys(SPLITS, 0)
    for split, size in SPLIT_BLOCKS + EXTRA_BLOCKS.get(family, ()):
        sizes[split] += size
    return sizes


DATASET_SPLIT_TENTHS: tuple[tuple[str, int], ...] = (("train", 8), ("validation", 1), ("test", 1))

INSTRUCTIONS = (
    "Solve the math problem. Reason briefly, then end your reply with a final line of the form\n"
    "Answer: <answer>\n"
    "Give exact values: an integer, a fraction such as 3/4, or an expression such as 2x^2 + 1. "
    "When there are several answers, separate them with commas."
)

# A format instruction with one worked example: the kind of short context a small model measurably uses
# (../shared/docs/models.md: two-digit addition, 36% -> 52% greedy with such a context).
WORKED_EXAMPLE = (
    "Work step by step in one or two short sentences, then write the final answer alone on the last line "
    "after 'Answer:'.\n"
    "Example. Problem: What is 27 + 48?\n"
    "Reply: 27 + 48 = 27 + 40 + 8 = 67 + 8 = 75.\n"
    "Answer: 75"
)


@dataclass(frozen=True)
class MathTask:
    """One problem with its gold answer; ``family`` is "dataset" for problems read from a file."""

    problem: str
    answer: str
    family: str
    level: int | None = None

    @property
    def task_id(self) -> str:
        digest = hashlib.sha1(f"{self.problem}\0{self.answer}".encode()).hexdigest()
        return f"{self.family}-{digest[:12]}"


# -- procedural families ----------------------------------------------------------------------------
# Each generator maps (level, rng) to (problem text, gold answer). Only integer arithmetic and Fraction:
# the gold answers are exact, and every one is checked by the rational fast path of math_check.

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
# The default pool; ``addition`` (what the small default model can do) is chosen by name only.
FAMILIES: tuple[str, ...] = tuple(family for family in GENERATORS if family != "addition")


def _family_seed(family: str) -> int:
    return int(hashlib.sha1(family.encode()).hexdigest()[:8], 16)


@lru_cache(maxsize=16)
def procedural_pool(families: tuple[str, ...], levels: tuple[int, ...]) -> dict[str, tuple[MathTask, ...]]:
    """The procedural tasks of ``families`` x ``levels`` by split (``per_family_level`` each).

    Problem ``counter`` of a (family, level) comes from ``default_rng([family seed, level, counter])``;
    texts seen before are skipped; the unique ones are dealt out in ``SPLIT_BLOCKS`` order (then the
    family's ``EXTRA_BLOCKS``), so the splits are disjoint and a split's tasks do not depend on the
    others' sizes. Each split is ordered by task id, which mixes the families.
    """
    pool: dict[str, list[MathTask]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    for family in families:
        blocks = SPLIT_BLOCKS + EXTRA_BLOCKS.get(family, ())
        quota = sum(size for _, size in blocks)
        for level in levels:
            unique: list[MathTask] = []
            for counter in range(50 * quota):
                rng = np.random.default_rng([_family_seed(family), level, counter])
                problem, answer = GENERATORS[family](level, rng)
                if problem not in seen:
                    seen.add(problem)
                    unique.append(MathTask(problem, answer, family, level))
                    if len(unique) == quota:
                        break
            else:
                raise RuntimeError(f"{family} level {level} yields fewer than {quota} distinct problems")
            start = 0
            for split, size in blocks:
                pool[split].extend(unique[start : start + size])
                start += size
    return {split: tuple(sorted(tasks, key=lambda task: task.task_id)) for split, tasks in pool.items()}


def load_dataset(path: str | os.PathLike[str]) -> dict[str, tuple[MathTask, ...]]:
    """Tasks from a JSONL file of ``{"problem": str, "answer": str | number, "split"?: str}`` lines.

    A line without ``split`` goes to train / validation / test (80/10/10) by a hash of its problem text.
    Blank lines are skipped; a repeated problem keeps its first occurrence. A malformed line raises
    ValueError naming the file and line number.
    """
    pool: dict[str, list[MathTask]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                task, split = _dataset_task(record)
            except (ValueError, TypeError, RecursionError) as error:
                raise ValueError(f"{os.fspath(path)}:{number}: {error}") from None
            if task.problem not in seen:
                seen.add(task.problem)
                pool[split].append(task)
    if not any(pool.values()):
        raise ValueError(f"{os.fspath(path)}: no problems")
    return {split: tuple(tasks) for split, tasks in pool.items()}


def _dataset_task(record: Any) -> tuple[MathTask, str]:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    problem, answer = record.get("problem"), record.get("answer")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError('"problem" must be a non-empty string')
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError('"answer" must be a non-empty string or a number')
    problem, answer = problem.strip(), answer.strip()
    split = record.get("split")
    if split is None:
        bucket = int(hashlib.sha1(problem.encode()).hexdigest()[:8], 16) % 10
        for split, tenths in DATASET_SPLIT_TENTHS:
            if bucket < tenths:
                break
            bucket -= tenths
    elif split not in SPLITS:
        raise ValueError(f'"split" must be one of {", ".join(SPLITS)}, got {split!r}')
    return MathTask(problem, answer, "dataset"), split


# -- the environment --------------------------------------------------------------------------------


def _reply_text(action: Any) -> str:
    """Any action as text; only its tail matters to answer extraction."""
    if isinstance(action, bytes):
        return action[-4 * TAIL_CHARS :].decode("utf-8", errors="replace")
    return action if isinstance(action, str) else str(action)


class MathEnv(TextEnv):
    """Single-turn math: the observation is a problem, the action the model's reply (or just its answer).

    Procedural pool: six families (arithmetic, word_problems, fractions, linear_equations,
    polynomial_roots, derivatives) at levels 1-3, 100 test / 12 validation / 120 train problems per
    family and level, so with every family and level: train 2160, validation 216, test 1800 (``addition``,
    a family chosen by name: 500 / 200 / 120; see ``SPLIT_BLOCKS``). ``families`` and
    ``level`` narrow it. With ``dataset`` (a JSONL file, see ``load_dataset``) the pool is that file.

    ``step`` reads the answer out of the reply (``Answer:`` line, ``\\boxed{}``, a bare answer, then
    ``answer_fallback``: "last_number" or "none") and rewards 1.0 when it equals the gold answer
    (``math_check.answers_match``), else 0.0; the episode then ends. Step info: ``success``,
    ``task_id``, ``answer`` (gold) and ``extracted`` (the answer read, "" when none).
    """

    max_action_chars: ClassVar[int] = 8_000
    check_timeout: ClassVar[float] = 0.5  # seconds for a symbolic check, so that a step stays under 1 s

    def __init__(
        self,
        render_mode: str | None = None,
        default_split: str = "train",
        *,
        families: Sequence[str] | None = None,
        level: int | None = None,
        dataset: str | os.PathLike[str] | None = None,
        answer_fallback: str = "last_number",
    ) -> None:
        super().__init__(render_mode=render_mode, default_split=default_split)
        if answer_fallback not in ("last_number", "none"):
            raise ValueError(f"answer_fallback must be 'last_number' or 'none', got {answer_fallback!r}")
        if dataset is not None and (families is not None or level is not None):
            raise ValueError("families and level select procedural problems; a dataset replaces them")
        if level is not None and level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS} or None, got {level!r}")
        families = tuple(FAMILIES if families is None else families)
        unknown = [family for family in families if family not in GENERATORS]
        if unknown or not families:
            raise ValueError(f"unknown families {unknown}; expected some of {', '.join(GENERATORS)}")
        self.answer_fallback = answer_fallback
        if dataset is not None:
            self._pool = load_dataset(dataset)
        else:
            self._pool = procedural_pool(families, LEVELS if level is None else (level,))
        self.split_sizes = {split: len(tasks) for split, tasks in self._pool.items()}
        self._task: MathTask | None = None

    @property
    def instructions(self) -> str:
        return INSTRUCTIONS

    def contexts(self) -> dict[str, str]:
        """``worked_example``: the answer format with one worked example."""
        return {"worked_example": WORKED_EXAMPLE}

    def parse_action(self, reply: str) -> str:
        """The answer written in ``reply`` ("" when none). Never raises."""
        if not isinstance(reply, str):
            return ""
        return extract_answer(reply, self.answer_fallback) or ""

    def reference_solution(self) -> list[str]:
        if self._task is None:
            raise RuntimeError("call reset() first")
        return [self._task.answer]

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Grade a reply. The answer is read from the raw reply first (lines intact, its tail kept):
        the base class's sanitising would join lines and keep only the head of a long reply."""
        return super().step(self.parse_action(_reply_text(action)))

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        self._task = self._pool[split][index]
        info = {"task_id": self._task.task_id, "family": self._task.family, "level": self._task.level}
        return self._task.problem, info

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        assert self._task is not None
        correct = bool(action) and answers_match(action, self._task.answer, timeout=self.check_timeout)
        if correct:
            observation = "Correct."
        elif action:
            shown = action if len(action) <= 200 else action[:200] + "..."
            observation = f"Incorrect: the answer read from your reply was {shown}"
        else:
            observation = "No answer found: end your reply with a line 'Answer: <answer>'."
        task = self._task
        info = {"task_id": task.task_id, "success": correct, "answer": task.answer, "extracted": action}
        return observation, float(correct), True, False, info
