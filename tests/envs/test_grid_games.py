"""FrozenLake and Sokoban as the paper plays them: pools, solvers, rules, messages and the turn budget."""

from __future__ import annotations

import collections
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.base import SPLITS
from envs.frozenlake import FrozenLakeEnv, Lake, render_board
from envs.frozenlake import solve as solve_lake
from envs.grid_games import ACTIONS, MOVES, PREAMBLE, STRIPPED_RULES, GridGameEnv, parse_action
from envs.sokoban import Puzzle, SokobanEnv, move
from envs.sokoban import render_board as render_room
from envs.sokoban import solve as solve_puzzle

ROOT = Path(__file__).resolve().parents[2]
ADVERSARIAL = [
    "",
    "x" * 100_000,
    b"\x00\xff\xfe [up] \x1b[31m",
    "\\" * 50 + " \\n \\x00 [\\up]",
    "🦜 ñandú [ÜP] Ωmega 北京 \u202e [d\u0000]",
    "\x00\x01\x02\r\n\t\x7f",
    "[up]\n[down]" * 1000,
    "[[[[[]]]]][upp][ up ",
    12345,
    None,
]


def play(env: GridGameEnv, actions: list[Any]) -> list[tuple[str, float, bool, bool, dict[str, Any]]]:
    """Step ``actions`` until the episode ends; return every step's result."""
    results = []
    for action in actions:
        results.append(env.step(action))
        if results[-1][2] or results[-1][3]:
            break
    return results


def lake_index(env: FrozenLakeEnv, wanted: Any) -> tuple[str, int]:
    """The first (split, index) whose map satisfies ``wanted``."""
    for split in SPLITS:
        for index in range(env.split_sizes[split]):
            if wanted(env.task(split, index)):
                return split, index
    raise AssertionError("no such map in the pool")


@pytest.fixture(scope="module")
def lake() -> FrozenLakeEnv:
    return FrozenLakeEnv()


@pytest.fixture(scope="module")
def sokoban() -> SokobanEnv:
    return SokobanEnv()


# -- Gymnasium contract and determinism -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["frozenlake", "sokoban"])
def test_check_env(name: str) -> None:
    env = envs.make(name, render_mode="ansi")
    check_env(env, skip_render_check=False)
    assert isinstance(gymnasium.make(envs.spec(name).gym_id).unwrapped, GridGameEnv)


def test_registered_classes() -> None:
    assert envs.make("frozenlake").__class__ is FrozenLakeEnv and envs.make("sokoban").__class__ is SokobanEnv


def test_same_tasks_in_a_fresh_process(lake: FrozenLakeEnv, sokoban: SokobanEnv) -> None:
    code = (
        "from envs.frozenlake import FrozenLakeEnv\nfrom envs.sokoban import SokobanEnv\n"
        "for env in (FrozenLakeEnv(), FrozenLakeEnv(randomize_start_goal=True), SokobanEnv()):\n"
        "    for split in ('train', 'validation', 'test'):\n"
        "        print(env.reset(options={'split': split, 'index': 3})[1]['task_id'])\n"
    )
    environ = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    here = [
        env.reset(options={"split": split, "index": 3})[1]["task_id"]
        for env in (lake, FrozenLakeEnv(randomize_start_goal=True), sokoban)
        for split in SPLITS
    ]
    assert out.stdout.split() == here


def test_pools_are_pinned(lake: FrozenLakeEnv, sokoban: SokobanEnv) -> None:
    # Same (split, index) -> same task on any machine: a change here (seed, generator, numpy's streams)
    # silently changes every benchmark number, so it must be deliberate.
    assert lake.reset(options={"split": "validation", "index": 0})[1]["task_id"] == "frozenlake-fe52f66e7d3d"
    assert sokoban.reset(options={"split": "validation", "index": 0})[1]["task_id"] == "sokoban-f61a0708c3dd"


@pytest.mark.parametrize("env_class", [FrozenLakeEnv, SokobanEnv])
def test_same_seed_same_board(env_class: type[GridGameEnv]) -> None:
    first, second = env_class(), env_class()
    for seed in (0, 7, 2**31):
        assert first.reset(seed=seed) == second.reset(seed=seed)
    options = {"split": "test", "index": 2}
    assert first.reset(options=options) == second.reset(options=options)


# -- task pools -----------------------------------------------------------------------------------------


def test_frozenlake_pool_is_every_solvable_map(lake: FrozenLakeEnv) -> None:
    # 3x3, 2 holes, fixed corners: C(7, 2) = 21 layouts; blocking both neighbours of the start or of the
    # goal leaves no path, the 19 others all have a 4-move path.
    assert lake.split_sizes == {"train": 11, "validation": 4, "test": 4}
    maps = [lake.task(split, i) for split in SPLITS for i in range(lake.split_sizes[split])]
    assert len({m.rows() for m in maps}) == 19
    assert all(m.start == (0, 0) and m.goal == (2, 2) and len(m.holes) == 2 for m in maps)
    assert FrozenLakeEnv(randomize_start_goal=True).split_sizes == {"train": 46, "validation": 15, "test": 15}


@pytest.mark.parametrize("randomize", [False, True])
def test_every_frozenlake_map_is_won_by_its_reference_solution(randomize: bool) -> None:
    env = FrozenLakeEnv(randomize_start_goal=randomize)
    for split in SPLITS:
        for index in range(env.split_sizes[split]):
            env.reset(options={"split": split, "index": index})
            solution = env.reference_solution()
            assert solution == solve_lake(env.task(split, index)) and 1 <= len(solution) <= env.max_turns
            _, reward, terminated, truncated, info = play(env, solution)[-1]
            assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_splits_are_disjoint_by_content(lake: FrozenLakeEnv, sokoban: SokobanEnv) -> None:
    for env, content in ((lake, Lake.rows), (sokoban, Puzzle.xsb)):
        by_split = {s: [content(env.task(s, i)) for i in range(env.split_sizes[s])] for s in SPLITS}
        assert all(len(set(tasks)) == len(tasks) for tasks in by_split.values())
        for a, b in itertools.combinations(SPLITS, 2):
            assert not set(by_split[a]) & set(by_split[b])
    assert sokoban.split_sizes == {"train": 1000, "validation": 100, "test": 200}


def solved_within(puzzle: Puzzle, moves: int) -> bool:
    """Whether some sequence of at most ``moves`` moves puts every box on a goal (tries them all)."""
    for length in range(moves + 1):
        for sequence in itertools.product(MOVES, repeat=length):
            player, boxes = puzzle.player, puzzle.boxes
            for direction in sequence:
                moved = move(puzzle.walls, boxes, player, direction)
                if isinstance(moved, str):
                    break
                player, boxes, _ = moved
            else:
                if boxes <= puzzle.goals:
                    return True
    return False


def test_sokoban_puzzles_are_winnable_within_the_turn_budget(sokoban: SokobanEnv) -> None:
    tasks = [(s, i) for s in ("validation", "test") for i in range(sokoban.split_sizes[s])]
    tasks += [("train", i) for i in range(0, 1000, 10)]
    for split, index in tasks:
        _, info = sokoban.reset(options={"split": split, "index": index})
        solution = sokoban.reference_solution()
        assert not solved_within(sokoban.puzzle, len(solution) - 1)  # brute force: no shorter solution exists
        observation, reward, terminated, truncated, info = play(sokoban, solution)[-1]
        assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
        assert observation.startswith("You pushed a box while moved [")
        assert "Congratulations! You have solved the Sokoban puzzle!" in observation


def test_sokoban_difficulties_are_spread_evenly(sokoban: SokobanEnv) -> None:
    lengths = {
        split: collections.Counter(
            len(solve_puzzle(sokoban.task(split, i)) or []) for i in range(sokoban.split_sizes[split])
        )
        for split in SPLITS
    }
    total = sum(lengths.values(), collections.Counter())
    assert total == {length: 260 for length in range(1, 6)}
    assert all(set(lengths[split]) == {1, 2, 3, 4, 5} for split in SPLITS)


# -- rules of play --------------------------------------------------------------------------------------


def test_a_hole_ends_frozenlake_in_failure(lake: FrozenLakeEnv) -> None:
    split, index = lake_index(lake, lambda m: (1, 0) in m.holes)
    lake.reset(options={"split": split, "index": index})
    observation, reward, terminated, truncated, info = lake.step("[down]")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)
    assert observation.startswith("You moved down to position (1, 0).\nYou fell into a hole! Game over.")
    with pytest.raises(gymnasium.error.ResetNeeded):
        lake.step("[up]")


def test_frozenlake_messages_and_board(lake: FrozenLakeEnv) -> None:
    split, index = lake_index(lake, lambda m: m.holes == {(0, 2), (1, 1)})
    observation, info = lake.reset(options={"split": split, "index": index})
    board = (
        "+-----+-----+-----+\n|  P  |     |  H  |\n+-----+-----+-----+\n|     |  H  |     |\n"
        "+-----+-----+-----+\n|     |     |  G  |\n+-----+-----+-----+"
    )
    actions = "[up], [down], [left], [right], [w], [a], [s], [d]"
    assert observation == f"Current Board:\n\n{board}\n\nAvailable Actions: {actions}"
    assert info["admissible_actions"] == list(ACTIONS) == ["[up]", "[down]", "[left]", "[right]"]
    observation, *_ = lake.step("I'll go [s]")
    assert observation.startswith("You moved down to position (1, 0).\nCurrent Board:")
    *_, (observation, reward, terminated, truncated, info) = play(lake, ["[down]", "[right]", "[RIGHT]"])
    won = "You moved right to position (2, 2).\nCongratulations! You reached the goal!\nCurrent Board:"
    assert observation.startswith(won)
    assert "| P/G |" in observation
    assert (reward, terminated, info["success"], info["turn"]) == (1.0, True, True, 4)


def test_player_on_goal_shows_both() -> None:
    lake = Lake(3, (0, 0), (2, 2), frozenset({(0, 1), (0, 2)}))
    assert "|  H  |  H  |" in render_board(lake, (0, 0))
    assert "| P/G |" in render_board(lake, (2, 2))
    assert solve_lake(Lake(3, (0, 0), (2, 2), frozenset({(0, 1), (1, 0)}))) is None


def test_invalid_move_warns_once_then_ends_the_game(lake: FrozenLakeEnv) -> None:
    lake.reset(options={"split": "test", "index": 0})
    observation, reward, terminated, truncated, info = lake.step("[up]")  # off the grid
    assert observation.startswith(
        "You attempted an invalid move. Reason: You tried to move up but hit a wall! Please resubmit"
    )
    assert (reward, terminated, truncated, info["invalid_move"]) == (0.0, False, False, True)
    assert "|  P  |" in observation.splitlines()[4]  # the player has not moved
    observation, reward, terminated, truncated, info = lake.step("no action here")
    assert observation.startswith("Invalid Move: Invalid action format.")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)


def test_a_valid_move_resets_the_invalid_count(lake: FrozenLakeEnv) -> None:
    split, index = lake_index(lake, lambda m: (0, 1) not in m.holes)
    lake.reset(options={"split": split, "index": index})
    steps = play(lake, ["[left]", "[right]", "[w]", "[left]", "[x]"])
    assert [s[4]["invalid_move"] for s in steps] == [True, False, True, False, True]
    assert not any(s[2] for s in steps)
    assert steps[-1][3] and steps[-1][0].splitlines()[1] == "You reached the turn limit! Game over."


def test_turns_run_out_after_max_turns() -> None:
    env = SokobanEnv(max_turns=2)
    two_moves = (env.reset(options={"split": "validation", "index": i}) for i in range(100))
    index = next(info["index"] for _, info in two_moves if info["optimal_moves"] == 2)
    env.reset(options={"split": "validation", "index": index})
    steps = play(env, ["no idea", env.reference_solution()[0], "[up]"])
    assert len(steps) == 2 and [(s[2], s[3]) for s in steps] == [(False, False), (False, True)]
    assert steps[-1][0].splitlines()[1] == "The turn limit has been reached. You did not solve the puzzle."
    assert steps[-1][1] == 0.0 and steps[-1][4]["success"] is False
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step("[up]")


def test_pushing_a_box_into_a_wall_is_invalid(sokoban: SokobanEnv) -> None:
    # The box stands against the west wall, the player east of it; the goal is in another column.
    room = ["######", "#    #", "#$@  #", "#  . #", "#    #", "######"]
    walls = frozenset((r, c) for r, row in enumerate(room) for c, ch in enumerate(row) if ch == "#")
    puzzle = Puzzle(6, walls, frozenset({(3, 3)}), frozenset({(2, 1)}), (2, 2))
    assert move(puzzle.walls, puzzle.boxes, puzzle.player, "left") == "You cannot push a box into a wall!"
    assert move(puzzle.walls, puzzle.boxes, puzzle.player, "right") == ((2, 3), puzzle.boxes, False)
    assert solve_puzzle(puzzle) is None  # nothing can push the box off the wall
    pair = frozenset({(2, 3), (2, 4)})
    assert move(walls, pair, (2, 2), "right") == "You cannot push a box into another box!"
    # The same rule in the env: find a pool puzzle whose start offers a blocked push.
    into_wall = "You cannot push a box into a wall!"
    for index in range(sokoban.split_sizes["train"]):
        p = sokoban.task("train", index)
        blocked = [d for d in MOVES if move(p.walls, p.boxes, p.player, d) == into_wall]
        if blocked:
            board, _ = sokoban.reset(options={"split": "train", "index": index})
            observation, reward, terminated, truncated, info = sokoban.step(f"[{blocked[0]}]")
            assert observation.startswith(f"You attempted an invalid move. Reason: {into_wall}")
            assert observation.endswith(board) and info["invalid_move"] and not terminated
            return
    raise AssertionError("no pool puzzle starts beside a box against a wall")


def test_sokoban_board_symbols() -> None:
    room = ["######", "#    #", "#  @ #", "# $. #", "# *  #", "######"]
    cells = {(r, c): ch for r, row in enumerate(room) for c, ch in enumerate(row)}
    puzzle = Puzzle(
        6,
        frozenset(cell for cell, ch in cells.items() if ch == "#"),
        frozenset(cell for cell, ch in cells.items() if ch in ".*"),
        frozenset(cell for cell, ch in cells.items() if ch in "$*"),
        (2, 3),
    )
    assert puzzle.xsb() == "\n".join(room)
    assert render_room(puzzle, puzzle.boxes, puzzle.player).splitlines() == [
        "# # # # # #", "# _ _ _ _ #", "# _ _ P _ #", "# _ X O _ #", "# _ √ _ _ #", "# # # # # #",
    ]
    assert solve_puzzle(puzzle) == ["[left]", "[left]", "[down]", "[right]"]


# -- actions and instructions ---------------------------------------------------------------------------


def test_parse_action_takes_the_last_bracketed_action() -> None:
    assert parse_action("Not [up], maybe [left]... final answer: [Right]") == "[right]"
    assert parse_action("[W] then [ s ]") == "[down]"
    assert parse_action("[a]") == "[left]" and parse_action("[D]") == "[right]"
    assert parse_action("up") == "" and parse_action("[upward] [dd]") == "" and parse_action("") == ""
    assert parse_action(b"[up]") == "[up]"


def test_a_long_reasoning_reply_is_parsed_whole(lake: FrozenLakeEnv) -> None:
    split, index = lake_index(lake, lambda m: (0, 1) not in m.holes)
    lake.reset(options={"split": split, "index": index})
    reply = "Let me think. " * 3_000 + "\n\nSo the answer is [d]"
    observation, *_ = lake.step(reply)
    assert observation.startswith("You moved right to position (0, 1).")


@pytest.mark.parametrize("env_class", [FrozenLakeEnv, SokobanEnv])
def test_rules_stripped_and_full(env_class: type[GridGameEnv]) -> None:
    stripped, full = env_class().instructions, env_class(rules="full").instructions
    for text in (stripped, full):
        assert text.startswith(PREAMBLE)
        assert text.endswith("(Remember to wrap your final answer of the action in square brackets)")
    assert STRIPPED_RULES in stripped and STRIPPED_RULES not in full
    for secret in ("Hole", "box", "'#'", "'O'", "turns"):
        assert secret not in stripped
    assert "5 turns" in full and "a second one in a row ends the game" in full
    if env_class is FrozenLakeEnv:
        assert "'H' = Hole" in full and "Falling into a hole ends the game" in full
    else:
        assert "push it by moving in the same direction" in full and "'√'" in full and "'_'" in full
    with pytest.raises(ValueError, match="rules"):
        env_class(rules="none")


@pytest.mark.parametrize("env_class", [FrozenLakeEnv, SokobanEnv])
def test_adversarial_actions_never_raise(env_class: type[GridGameEnv]) -> None:
    env = env_class()
    for action in ADVERSARIAL:
        env.reset(seed=1)
        observation, reward, terminated, truncated, info = env.step(action)
        assert isinstance(observation, str) and "Current Board:" in observation
        assert reward in (0.0, 1.0) and isinstance(info["success"], bool)
        assert isinstance(env.parse_action(action), str)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="too few"):
        FrozenLakeEnv(size=2, num_holes=1)
    with pytest.raises(ValueError, match="max_turns"):
        FrozenLakeEnv(max_turns=0)
    with pytest.raises(ValueError, match="num_boxes"):
        SokobanEnv(num_boxes=0)
