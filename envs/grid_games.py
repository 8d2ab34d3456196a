"""Grid games as the OPCD paper plays them: FrozenLake and Sokoban, one move per turn, five turns.

What the two games share lives here: the action vocabulary and its parser (the *last* bracketed action
in a reply wins, as in LMOps), the system message, the turn budget and the invalid-move rule (the first
invalid move in a row gets textarena's warning, a second one in a row ends the game), and the
pass-or-nothing reward. The games themselves are ``envs.frozenlake.FrozenLakeEnv`` and
``envs.sokoban.SokobanEnv``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, NamedTuple

from envs.base import TextEnv

Cell = tuple[int, int]  # (row, column), 0-based from the top-left
MOVES: dict[str, Cell] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
ACTIONS: tuple[str, ...] = tuple(f"[{name}]" for name in MOVES)
WASD: dict[str, str] = {"w": "up", "a": "left", "s": "down", "d": "right"}
_ACTION_PATTERN = re.compile(r"\[\s*(up|down|left|right|w|a|s|d)\s*\]", re.IGNORECASE)

PREAMBLE = "You are an agent playing a game on a grid, acting as a reasoning engine."
# LMOps replaces each game's own rules with this paragraph, so the agent must infer the rules by playing.
STRIPPED_RULES = (
    "You are the player and you are represented by 'P' on the grid. You should select the best action to "
    "reach the goal in the shortest number of steps. Your only way to interact is to move one step each "
    "time. Available actions: up, down, left, right (or w, a, s, d). Type your action as: [up], [down], "
    "[left], [right] or [w], [a], [s], [d]"
)
CLOSING = "What action do you take? (Remember to wrap your final answer of the action in square brackets)"
RULE_SETS: tuple[str, ...] = ("stripped", "full")
ERROR_ALLOWANCE = 1  # invalid moves in a row that are forgiven (textarena's and LMOps' setting)
FORMAT_REASON = "Invalid action format. Use [up], [down], [left], [right] or [w], [a], [s], [d]."


def parse_action(reply: Any) -> str:
    """The last ``[up]``/``[down]``/``[left]``/``[right]``/``[w]``/``[a]``/``[s]``/``[d]`` in ``reply``
    (case-insensitive), in canonical form (``"[up]"``...); ``""`` when there is none. Never raises."""
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", errors="replace")
    elif not isinstance(reply, str):
        reply = str(reply)
    last = None
    for last in _ACTION_PATTERN.finditer(reply):
        pass
    if last is None:
        return ""
    word = last.group(1).lower()
    return f"[{WASD.get(word, word)}]"


class Move(NamedTuple):
    """What one move did: a message for the agent, or why it was invalid; whether it ended the game."""

    message: str = ""
    invalid_reason: str | None = None
    outcome: str = ""  # the closing line when the move ends the game
    done: bool = False
    success: bool = False


class GridGameEnv(TextEnv):
    """A grid game played one move per turn for ``max_turns`` turns (every step uses one, valid or not).

    Subclasses load a task (``_start_task``), render the board (``_board``), apply a move (``_apply``)
    and give their full rules (``_full_rules``). Reward is 1.0 on the step that wins, else 0.0: the paper
    discards textarena's partial "completion" rewards. ``rules="stripped"`` (the paper) gives the agent
    only the generic paragraph; ``rules="full"`` gives the game's own rules and legend.
    """

    # Replies are searched whole (the paper keeps the reasoning) and the action comes last, so a long
    # reply must reach the parser uncut.
    max_action_chars: ClassVar[int] = 65_536
    turn_limit_message: ClassVar[str]
    invalid_moves: ClassVar[str]  # which moves are invalid, for the full rules ("Moving off the grid")

    def __init__(
        self,
        *,
        max_turns: int = 5,
        rules: str = "stripped",
        render_mode: str | None = None,
        default_split: str = "train",
    ) -> None:
        super().__init__(render_mode=render_mode, default_split=default_split)
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        if rules not in RULE_SETS:
            raise ValueError(f"rules must be one of {', '.join(RULE_SETS)}, got {rules!r}")
        self.max_turns = max_turns
        self.rules = rules
        self._task_id = ""
        self._solution: list[str] = []
        self._turn = 0
        self._invalid_in_a_row = 0

    # -- what an agent needs --------------------------------------------------------------------------

    @property
    def instructions(self) -> str:
        rules = STRIPPED_RULES if self.rules == "stripped" else self._full_rules()
        return f"{PREAMBLE}\n\n{rules}\n\n{CLOSING}"

    def parse_action(self, reply: str) -> str:
        return parse_action(reply)

    def contexts(self) -> dict[str, str]:
        """``rules``: the game's full rules and symbol legend, which the stripped instructions leave out."""
        return {"rules": self._full_rules()}

    def reference_solution(self) -> list[str]:
        """An optimal action list (BFS) from the task's start position."""
        return list(self._solution)

    def _turn_rules(self) -> str:
        """The harness rules, stated in the full rule set only."""
        return (
            f"{self.invalid_moves}, or a reply without a valid action, is an invalid move: the first one "
            "gets a warning and changes nothing, a second one in a row ends the game. You have "
            f"{self.max_turns} turns; every reply uses one."
        )

    # -- the game loop --------------------------------------------------------------------------------

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        self._turn = 0
        self._invalid_in_a_row = 0
        self._task_id, self._solution = self._start_task(split, index)
        return self._board(), {**self._info(), "optimal_moves": len(self._solution)}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._turn += 1
        parsed = parse_action(action)
        move = self._apply(parsed[1:-1]) if parsed else Move(invalid_reason=FORMAT_REASON)
        lines: list[str] = []
        terminated, success = move.done, move.success
        if move.invalid_reason is None:
            self._invalid_in_a_row = 0
            lines.append(move.message)
            if move.outcome:
                lines.append(move.outcome)
        else:
            self._invalid_in_a_row += 1
            if self._invalid_in_a_row > ERROR_ALLOWANCE:
                terminated = True
                lines.append(f"Invalid Move: {move.invalid_reason} Game over: two invalid moves in a row.")
            else:
                lines.append(
                    f"You attempted an invalid move. Reason: {move.invalid_reason} Please resubmit a valid "
                    "move and remember to follow the game rules to avoid penalties."
                )
        truncated = not terminated and self._turn >= self.max_turns
        if truncated:
            lines.append(self.turn_limit_message)
        lines.append(self._board())
        info = {**self._info(), "success": success, "invalid_move": move.invalid_reason is not None}
        return "\n".join(lines), 1.0 if success else 0.0, terminated, truncated, info

    def _info(self) -> dict[str, Any]:
        return {
            "task_id": self._task_id,
            "admissible_actions": list(ACTIONS),
            "turn": self._turn,
            "max_turns": self.max_turns,
        }

    # -- what each game provides ----------------------------------------------------------------------

    def _start_task(self, split: str, index: int) -> tuple[str, list[str]]:
        """Load task ``index`` of ``split``; return its task id and an optimal action list."""
        raise NotImplementedError

    def _board(self) -> str:
        """The current board with its header and the available actions, as textarena shows it."""
        raise NotImplementedError

    def _apply(self, direction: str) -> Move:
        """Move the player ``direction`` (a key of ``MOVES``); an invalid move changes nothing."""
        raise NotImplementedError

    def _full_rules(self) -> str:
        """The game's own rules and symbol legend (``rules="full"``)."""
        raise NotImplementedError
