"""Sokoban as the paper plays it: a 6x6 room with one box, textarena's board and messages.

The paper plays 5 turns of one move each, so a puzzle is only winnable if its optimal solution has at
most ``max_turns`` moves. Rooms are built solvable by construction (random walls inside the border, each
box on its goal, then reverse play: the player walks and pulls boxes at random), deduplicated by content,
and kept when a BFS over (player, boxes) states solves them in 1..``max_turns`` moves, with the same
number of puzzles for each optimal length.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from envs.grid_games import MOVES, Cell, GridGameEnv, Move

POOL_SEED = 2_602_122_752
SPLIT_SIZES: dict[str, int] = {"train": 1000, "validation": 100, "test": 200}
SPLIT_STARTS: dict[str, int] = {"train": 0, "validation": 1000, "test": 1100}  # offsets into the pool
MAX_ATTEMPTS_PER_PUZZLE = 100  # candidate rooms per pooled puzzle before generation settles for what it has
PULL_PROBABILITY = 0.7  # in reverse play, how often a step that can pull a box does
State = tuple[Cell, frozenset[Cell]]  # (player, boxes)
SYMBOLS = {"wall": "#", "floor": "_", "goal": "O", "box": "X", "box_on_goal": "√", "player": "P"}


@dataclass(frozen=True)
class Puzzle:
    """A ``dim`` x ``dim`` room (cells as (row, column)); ``walls`` include the whole border."""

    dim: int
    walls: frozenset[Cell]
    goals: frozenset[Cell]
    boxes: frozenset[Cell]
    player: Cell

    def xsb(self) -> str:
        """The standard Sokoban text format ('#' wall, '.' goal, '$' box, '*' box on goal, '@' player,
        '+' player on goal): the canonical content the task id hashes."""
        rows = []
        for r in range(self.dim):
            row = ""
            for c in range(self.dim):
                cell = (r, c)
                on_goal = cell in self.goals
                if cell in self.walls:
                    row += "#"
                elif cell in self.boxes:
                    row += "*" if on_goal else "$"
                elif cell == self.player:
                    row += "+" if on_goal else "@"
                else:
                    row += "." if on_goal else " "
            rows.append(row)
        return "\n".join(rows)

    @property
    def task_id(self) -> str:
        return "sokoban-" + hashlib.sha1(self.xsb().encode()).hexdigest()[:12]


def move(
    walls: frozenset[Cell], boxes: frozenset[Cell], player: Cell, direction: str
) -> tuple[Cell, frozenset[Cell], bool] | str:
    """Move the player ``direction`` (a key of ``MOVES``), pushing a box ahead of it.

    Returns (player, boxes, whether a box was pushed), or textarena's reason when the move is invalid:
    walking into a wall, or pushing a box into a wall or another box.
    """
    dr, dc = MOVES[direction]
    target = (player[0] + dr, player[1] + dc)
    if target in walls:
        return "You cannot move into a wall!"
    if target not in boxes:
        return target, boxes, False
    beyond = (target[0] + dr, target[1] + dc)
    if beyond in walls:
        return "You cannot push a box into a wall!"
    if beyond in boxes:
        return "You cannot push a box into another box!"
    return target, (boxes - {target}) | {beyond}, True


def render_board(puzzle: Puzzle, boxes: frozenset[Cell], player: Cell) -> str:
    """textarena's grid, one space-separated row per line. As in the paper the player shows as 'P' even
    on a goal (the goal is hidden meanwhile)."""
    rows = []
    for r in range(puzzle.dim):
        cells = []
        for c in range(puzzle.dim):
            cell = (r, c)
            if cell == player:
                cells.append(SYMBOLS["player"])
            elif cell in puzzle.walls:
                cells.append(SYMBOLS["wall"])
            elif cell in boxes:
                cells.append(SYMBOLS["box_on_goal" if cell in puzzle.goals else "box"])
            else:
                cells.append(SYMBOLS["goal" if cell in puzzle.goals else "floor"])
        rows.append(" ".join(cells) + "\n")
    return "".join(rows)


def solve(puzzle: Puzzle, max_moves: int | None = None) -> list[str] | None:
    """An optimal action list (``"[up]"``...) that puts every box on a goal, by BFS over (player, boxes);
    ``None`` when there is none (of at most ``max_moves`` moves, when given)."""
    if puzzle.boxes <= puzzle.goals:
        return []
    start: State = (puzzle.player, puzzle.boxes)
    parents: dict[State, tuple[State, str] | None] = {start: None}
    frontier, depth = [start], 0
    while frontier and (max_moves is None or depth < max_moves):
        depth += 1
        next_frontier = []
        for state in frontier:
            for direction in MOVES:
                result = move(puzzle.walls, state[1], state[0], direction)
                if isinstance(result, str) or (child := (result[0], result[1])) in parents:
                    continue
                parents[child] = (state, direction)
                if child[1] <= puzzle.goals:
                    path: list[str] = []
                    while (step := parents[child]) is not None:
                        child, taken = step
                        path.append(f"[{taken}]")
                    return path[::-1]
                next_frontier.append(child)
        frontier = next_frontier
    return None


@lru_cache(maxsize=8)
def _room_cells(dim: int) -> tuple[frozenset[Cell], tuple[Cell, ...]]:
    """The border and the interior cells of a ``dim`` x ``dim`` room."""
    cells = [(r, c) for r in range(dim) for c in range(dim)]
    border = frozenset(cell for cell in cells if cell[0] in (0, dim - 1) or cell[1] in (0, dim - 1))
    return border, tuple(cell for cell in cells if cell not in border)


def random_puzzle(rng: np.random.Generator, dim: int, num_boxes: int, walk_steps: int) -> Puzzle | None:
    """A room solvable by construction: random inner walls, boxes on their goals, then ``walk_steps``
    steps of reverse play. ``None`` when the walk left every box on a goal
    or the player on a goal (the paper's board would hide that goal)."""
    border, interior = _room_cells(dim)
    order = [interior[i] for i in rng.permutation(len(interior)).tolist()]
    n_walls = int(rng.integers(0, len(interior) // 3 + 1))
    floor = order[n_walls:]
    walls = border | frozenset(order[:n_walls])
    goals = frozenset(floor[:num_boxes])
    # The walk opens with a pull of the last box (the player backs away from it), so it leaves its goal.
    box = floor[num_boxes - 1]
    starts = [
        (cell, (2 * cell[0] - box[0], 2 * cell[1] - box[1]))
        for cell in floor[num_boxes:]
        if abs(cell[0] - box[0]) + abs(cell[1] - box[1]) == 1
    ]
    starts = [(cell, back) for cell, back in starts if back not in walls and back not in goals]
    if not starts:
        return None
    boxes, player = (set(goals) - {box}) | {starts[0][0]}, starts[0][1]
    directions = list(MOVES.values())
    for step, pull in zip(rng.integers(4, size=walk_steps - 1).tolist(), rng.random(walk_steps - 1).tolist()):
        dr, dc = directions[step]
        target = (player[0] + dr, player[1] + dc)
        if target in walls or target in boxes:
            continue
        behind = (player[0] - dr, player[1] - dc)
        # A pull is a push played backwards: the box behind the player follows it.
        if behind in boxes and pull < PULL_PROBABILITY:
            boxes.remove(behind)
            boxes.add(player)
        player = target
    if boxes <= goals or player in goals:
        return None
    return Puzzle(dim, walls, goals, frozenset(boxes), player)


@lru_cache(maxsize=8)
def puzzle_pool(dim: int, num_boxes: int, max_turns: int, size: int) -> tuple[Puzzle, ...]:
    """``size`` distinct puzzles whose optimal solutions take 1..``max_turns`` moves, in a seeded order.

    Each optimal length gets an equal share where the generator reaches it within its attempt budget
    (always for the default 6x6 room, 1 box, 5 turns; about 0.3 s). Deterministic on any machine.
    """
    rng = np.random.default_rng([POOL_SEED, dim, num_boxes, max_turns, size])
    quota = math.ceil(size / max_turns)
    by_length: dict[int, list[Puzzle]] = {length: [] for length in range(1, max_turns + 1)}
    seen: set[str] = set()
    for _ in range(MAX_ATTEMPTS_PER_PUZZLE * size):
        if all(len(bucket) >= quota for bucket in by_length.values()):
            break
        puzzle = random_puzzle(rng, dim, num_boxes, int(rng.integers(1, 3 * max_turns + 1)))
        if puzzle is None or (content := puzzle.xsb()) in seen:
            continue
        seen.add(content)
        solution = solve(puzzle, max_turns)
        if solution:
            by_length[len(solution)].append(puzzle)
    # Round-robin over lengths: equal shares, topped up from the lengths that were easier to reach.
    buckets = list(by_length.values())
    pool = [bucket[i] for i in range(max(map(len, buckets))) for bucket in buckets if i < len(bucket)][:size]
    if len(pool) < size:
        raise RuntimeError(f"generated only {len(pool)} of {size} Sokoban puzzles for {dim=} {num_boxes=}")
    return tuple(pool[int(i)] for i in rng.permutation(size))


class SokobanEnv(GridGameEnv):
    """Sokoban in a ``dim`` x ``dim`` room with ``num_boxes`` boxes, as the OPCD paper plays it.

    One move per turn: walking, or pushing the box ahead. Walking into a wall or pushing a box into a wall
    or another box is an invalid move. Pass (reward 1.0) = every box on a goal within ``max_turns`` turns.
    Observations are textarena's: the board ('#' wall, '_' floor, 'O' goal, 'X' box, '√' box on goal,
    'P' player), then "You moved [up]." or "You pushed a box while moved [up]." and the new board.

    Task pool: train 1000 / validation 100 / test 200 distinct puzzles, each solvable in 1..``max_turns``
    moves (an equal share per optimal length), generated from a fixed seed on first use and cached per
    process (about a second for the default setting).
    """

    turn_limit_message: ClassVar[str] = "The turn limit has been reached. You did not solve the puzzle."
    invalid_moves: ClassVar[str] = "Walking into a wall or pushing a box into a wall or another box"

    def __init__(
        self,
        dim: int = 6,
        num_boxes: int = 1,
        max_turns: int = 5,
        rules: str = "stripped",
        render_mode: str | None = None,
        default_split: str = "train",
    ) -> None:
        super().__init__(
            max_turns=max_turns, rules=rules, render_mode=render_mode, default_split=default_split
        )
        if dim < 4 or not 1 <= num_boxes < (dim - 2) ** 2 - 1:
            raise ValueError(f"need dim >= 4 and 1 <= num_boxes < (dim-2)**2 - 1, got {dim=} {num_boxes=}")
        self.dim = dim
        self.num_boxes = num_boxes
        self.split_sizes = dict(SPLIT_SIZES)
        self._puzzle: Puzzle | None = None
        self._boxes: frozenset[Cell] = frozenset()
        self._player: Cell = (0, 0)

    def task(self, split: str, index: int) -> Puzzle:
        """The puzzle of task ``index`` of ``split`` (builds the pool on first use)."""
        if not 0 <= index < SPLIT_SIZES[split]:
            raise IndexError(f"task index {index} out of range for split {split!r}")
        pool = puzzle_pool(self.dim, self.num_boxes, self.max_turns, sum(SPLIT_SIZES.values()))
        return pool[SPLIT_STARTS[split] + index]

    def _start_task(self, split: str, index: int) -> tuple[str, list[str]]:
        self._puzzle = puzzle = self.task(split, index)
        self._boxes, self._player = puzzle.boxes, puzzle.player
        return puzzle.task_id, solve(puzzle, self.max_turns) or []

    @property
    def puzzle(self) -> Puzzle:
        if self._puzzle is None:
            raise RuntimeError("call reset() first")
        return self._puzzle

    def _board(self) -> str:
        board = render_board(self.puzzle, self._boxes, self._player)
        return f"Current Board:\n\n{board}\nAvailable Moves: up, down, left, right"

    def _apply(self, direction: str) -> Move:
        result = move(self.puzzle.walls, self._boxes, self._player, direction)
        if isinstance(result, str):
            return Move(invalid_reason=result)
        self._player, self._boxes, pushed = result
        message = f"You pushed a box while moved [{direction}]." if pushed else f"You moved [{direction}]."
        if self._boxes <= self.puzzle.goals:
            solved = "Congratulations! You have solved the Sokoban puzzle!"
            return Move(message, outcome=solved, done=True, success=True)
        return Move(message)

    def _full_rules(self) -> str:
        return (
            "You are solving the Sokoban puzzle. "
            "You are the player and you need to push all boxes to targets.\n"
            "When you are right next to a box, you can push it by moving in the same direction.\n"
            "You cannot push a box through a wall, and you cannot pull a box.\n"
            "On the board, objects are represented as:\n"
            "- The player (you) appears as 'P'\n"
            "- Walls are represented with '#'\n"
            "- Empty floor is shown as '_'\n"
            "- Boxes are marked as 'X'\n"
            "- Empty goals are shown with a 'O'\n"
            "- Boxes on goals are visualized with '√'\n"
            "Type your action as: [up], [down], [left], [right] or [w], [a], [s], [d]\n"
            f"{self._turn_rules()}"
        )
