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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from envs.base import SPLITS, TextEnv
from envs.math_check import TAIL_CHARS, answers_match, extract_answer
from envs.math_families import GENERATORS

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
