"""FrozenLake as the paper plays it: textarena's board and messages, Gymnasium's deterministic dynamics.

The paper's setting is a 3x3 lake with 2 holes, start top-left, goal bottom-right. Every distinct map of
a setting that is solvable within the turn budget forms the task pool (sampled when there are too many
to list), shuffled with a fixed seed and split into validation, test and train.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from envs.grid_games import MOVES, Cell, GridGameEnv, Move

POOL_SEED = 2_602_122_751
ENUMERATE_LIMIT = 100_000  # hole layouts per setting; above this the pool is sampled
SAMPLED_POOL_SIZE = 1_500
EVAL_FRACTION = 0.2  # of the pool, for validation and for test each
MIN_SPLIT_SIZE = 3


@dataclass(frozen=True)
class Lake:
    """One map: a ``size`` x ``size`` grid with a start, a goal and holes, cells as (row, column)."""

    size: int
    start: Cell
    goal: Cell
    holes: frozenset[Cell]

    def rows(self) -> tuple[str, ...]:
        """Gymnasium's map description: 'S' start, 'F' frozen, 'H' hole, 'G' goal."""
        marks = {**{hole: "H" for hole in self.holes}, self.start: "S", self.goal: "G"}
        return tuple("".join(marks.get((r, c), "F") for c in range(self.size)) for r in range(self.size))

    @property
    def task_id(self) -> str:
        return "frozenlake-" + hashlib.sha1("\n".join(self.rows()).encode()).hexdigest()[:12]

    def contains(self, cell: Cell) -> bool:
        return 0 <= cell[0] < self.size and 0 <= cell[1] < self.size


def solve(lake: Lake, start: Cell | None = None) -> list[str] | None:
    """The shortest action list (``"[right]"``...) from ``start`` (default: the lake's) to the goal
    that avoids every hole, by BFS; ``None`` when the goal cannot be reached."""
    origin = lake.start if start is None else start
    parents: dict[Cell, tuple[Cell, str] | None] = {origin: None}
    queue = deque([origin])
    while queue:
        cell = queue.popleft()
        if cell == lake.goal:
            path: list[str] = []
            while (step := parents[cell]) is not None:
                cell, direction = step
                path.append(f"[{direction}]")
            return path[::-1]
        for direction, (dr, dc) in MOVES.items():
            nxt = (cell[0] + dr, cell[1] + dc)
            if lake.contains(nxt) and nxt not in lake.holes and nxt not in parents:
                parents[nxt] = (cell, direction)
                queue.append(nxt)
    return None


def render_board(lake: Lake, player: Cell) -> str:
    """textarena's ASCII table: ``+-----+`` borders, ``|  P  |`` cells, 'P/G' for the player on the goal."""
    hline = "+" + "+".join(["-----"] * lake.size) + "+"
    lines = [hline]
    for r in range(lake.size):
        cells = []
        for c in range(lake.size):
            label = "H" if (r, c) in lake.holes else "G" if (r, c) == lake.goal else " "
            if (r, c) == player:
                label = "P/G" if label == "G" else "P"
            cells.append(f" {label:^3} ")
        lines += ["|" + "|".join(cells) + "|", hline]
    return "\n".join(lines)


def start_goal_pairs(size: int, randomize: bool) -> list[tuple[Cell, Cell]]:
    """Top-left to bottom-right; with ``randomize``, any corner to the diagonally opposite one."""
    if not randomize:
        return [((0, 0), (size - 1, size - 1))]
    corners = [(0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)]
    return [(start, (size - 1 - start[0], size - 1 - start[1])) for start in corners]


def _candidates(size: int, num_holes: int, randomize: bool, rng: np.random.Generator) -> list[Lake]:
    """Every hole layout when they are few, else a deterministic sample of them (duplicates allowed)."""
    pairs = start_goal_pairs(size, randomize)
    free = {pair: [(r, c) for r in range(size) for c in range(size) if (r, c) not in pair] for pair in pairs}
    if len(pairs) * math.comb(size * size - 2, num_holes) <= ENUMERATE_LIMIT:
        return [
            Lake(size, start, goal, frozenset(holes))
            for (start, goal) in pairs
            for holes in itertools.combinations(free[(start, goal)], num_holes)
        ]
    lakes = []
    for _ in range(20 * SAMPLED_POOL_SIZE):
        start, goal = pairs[int(rng.integers(len(pairs)))]
        picks = rng.choice(size * size - 2, size=num_holes, replace=False)
        lakes.append(Lake(size, start, goal, frozenset(free[(start, goal)][int(i)] for i in picks)))
    return lakes


@lru_cache(maxsize=16)
def lake_pool(size: int, num_holes: int, randomize_start_goal: bool, max_turns: int) -> tuple[Lake, ...]:
    """The distinct maps of a setting whose shortest path fits in ``max_turns``, in a seeded order (at
    most ``SAMPLED_POOL_SIZE``: a seeded sample when there are more)."""
    if size < 2 or not 0 <= num_holes <= size * size - 2:
        raise ValueError(f"need size >= 2 and 0 <= num_holes <= size*size - 2, got {size=} {num_holes=}")
    rng = np.random.default_rng([POOL_SEED, size, num_holes, int(randomize_start_goal)])
    candidates = _candidates(size, num_holes, randomize_start_goal, rng)
    pool: dict[str, Lake] = {}
    for i in rng.permutation(len(candidates)).tolist():
        if len(pool) == SAMPLED_POOL_SIZE:
            break
        lake = candidates[i]
        path = solve(lake)
        if lake.task_id not in pool and path is not None and len(path) <= max_turns:
            pool[lake.task_id] = lake
    return tuple(pool.values())


def split_lakes(lakes: tuple[Lake, ...]) -> dict[str, tuple[Lake, ...]]:
    """Validation and test get ``EVAL_FRACTION`` of the pool each (at least ``MIN_SPLIT_SIZE``), train
    the rest."""
    n_eval = max(MIN_SPLIT_SIZE, round(EVAL_FRACTION * len(lakes)))
    if len(lakes) < 2 * n_eval + MIN_SPLIT_SIZE:
        raise ValueError(
            f"only {len(lakes)} distinct solvable maps in this setting: too few for three disjoint splits"
        )
    return {"train": lakes[2 * n_eval :], "validation": lakes[:n_eval], "test": lakes[n_eval : 2 * n_eval]}


class FrozenLakeEnv(GridGameEnv):
    """FrozenLake on a ``size`` x ``size`` lake with ``num_holes`` holes, as the OPCD paper plays it.

    Deterministic (not slippery) moves; stepping into a hole ends the episode in failure, reaching the
    goal wins (reward 1.0). Moving off the grid is an invalid move. Observations are textarena's: the
    ASCII board, then "You moved right to position (0, 1)." and the new board after each move.

    Task pool: every distinct solvable map (shortest path <= ``max_turns``) of the setting, shuffled with
    a fixed seed; 20% validation, 20% test (at least 3 each), the rest train. The paper's setting (3x3,
    2 holes, fixed start and goal) has 19 maps: train 11 / validation 4 / test 4; with
    ``randomize_start_goal`` (any corner to the opposite one) 76 maps: train 46 / validation 15 / test 15.
    A pool holds at most 1500 maps (a seeded sample of larger settings).
    """

    turn_limit_message: ClassVar[str] = "You reached the turn limit! Game over."
    invalid_moves: ClassVar[str] = "Moving off the grid"

    def __init__(
        self,
        size: int = 3,
        num_holes: int = 2,
        randomize_start_goal: bool = False,
        max_turns: int = 5,
        rules: str = "stripped",
        render_mode: str | None = None,
        default_split: str = "train",
    ) -> None:
        super().__init__(
            max_turns=max_turns, rules=rules, render_mode=render_mode, default_split=default_split
        )
        self.size = size
        self.num_holes = num_holes
        self.randomize_start_goal = randomize_start_goal
        self._splits = split_lakes(lake_pool(size, num_holes, bool(randomize_start_goal), max_turns))
        self.split_sizes = {split: len(lakes) for split, lakes in self._splits.items()}
        self._lake = self._splits[default_split][0]
        self._player = self._lake.start

    def task(self, split: str, index: int) -> Lake:
        """The map of task ``index`` of ``split``."""
        return self._splits[split][index]

    def _start_task(self, split: str, index: int) -> tuple[str, list[str]]:
        self._lake = self.task(split, index)
        self._player = self._lake.start
        return self._lake.task_id, solve(self._lake) or []

    def _board(self) -> str:
        actions = "[up], [down], [left], [right], [w], [a], [s], [d]"
        return f"Current Board:\n\n{render_board(self._lake, self._player)}\n\nAvailable Actions: {actions}"

    def _apply(self, direction: str) -> Move:
        dr, dc = MOVES[direction]
        target = (self._player[0] + dr, self._player[1] + dc)
        if not self._lake.contains(target):
            return Move(invalid_reason=f"You tried to move {direction} but hit a wall!")
        self._player = target
        message = f"You moved {direction} to position ({target[0]}, {target[1]})."
        if target in self._lake.holes:
            return Move(message, outcome="You fell into a hole! Game over.", done=True)
        if target == self._lake.goal:
            return Move(message, outcome="Congratulations! You reached the goal!", done=True, success=True)
        return Move(message)

    def _full_rules(self) -> str:
        route = (
            "from your start to the goal 'G'"
            if self.randomize_start_goal
            else "from the start (top-left) to the goal (bottom-right)"
        )
        return (
            "Welcome to Frozen Lake!\n\n"
            "You are represented by 'P' on the grid.\n"
            "Grid symbols:\n"
            "  ' ' = Frozen surface (safe to walk on)\n"
            "  'H' = Hole (fall in and lose!)\n"
            "  'G' = Goal (reach this to win!)\n"
            "  'P' = Your current position ('P/G' when you stand on the goal)\n\n"
            "Available actions: up, down, left, right (or w, a, s, d)\n"
            "Type your action as: [up], [down], [left], [right] or [w], [a], [s], [d]\n\n"
            f"Objective: Navigate {route} without falling into any holes! Falling into a hole ends the "
            f"game.\n{self._turn_rules()}"
        )
