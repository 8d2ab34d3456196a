"""The contract every text environment follows, and the pieces they share.

A ``TextEnv`` is a plain ``gymnasium.Env`` whose observations and actions are strings. On top of the
Gymnasium API it exposes what an LLM agent needs: ``instructions`` (the system message), ``parse_action``
(free-form model reply -> action, never raises) and a deterministic task pool split into
train / validation / test, chosen with ``reset(options={"split": ..., "index": ...})`` or by seed.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SPLITS: tuple[str, ...] = ("train", "validation", "test")
MAX_ACTION_CHARS = 1_000
MAX_OBSERVATION_CHARS = 100_000


class FreeText(spaces.Text):
    """A ``Text`` space that contains any string up to ``max_length`` characters.

    Gymnasium's ``Text`` only admits characters of its charset; model replies and game text contain
    arbitrary unicode, so membership checks the length alone. Sampling draws printable ASCII.
    """

    def __init__(self, max_length: int, *, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText({self.max_length})"


def sanitize_action(action: Any, max_chars: int = MAX_ACTION_CHARS) -> str:
    """Coerce any action to a short, printable, single-line string.

    Bytes are decoded leniently, control characters (NUL, escapes, newlines) become spaces and the
    result is cut to ``max_chars``: no input can reach a game engine in a form that upsets it.
    """
    if isinstance(action, bytes):
        action = action[: max_chars * 4].decode("utf-8", errors="replace")
    elif not isinstance(action, str):
        action = str(action)
    action = action[: max_chars * 4]
    cleaned = "".join(ch if ch.isprintable() else " " for ch in action)
    return " ".join(cleaned.split())[:max_chars]


class TextEnv(gym.Env[str, str]):
    """Base class of the text environments.

    Subclasses set ``split_sizes`` (tasks per split) and implement ``_reset_task`` and ``step``.
    ``reset`` validates the requested task, seeds ``self.np_random`` and fills the common info keys.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}
    split_sizes: Mapping[str, int]
    max_action_chars: ClassVar[int] = MAX_ACTION_CHARS

    def __init__(self, render_mode: str | None = None, default_split: str = "train") -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        if default_split not in SPLITS:
            raise ValueError(f"unknown split {default_split!r}; expected one of {', '.join(SPLITS)}")
        self.render_mode = render_mode
        self.default_split = default_split
        self.observation_space = FreeText(MAX_OBSERVATION_CHARS)
        self.action_space = FreeText(self.max_action_chars)
        self._last_observation = ""
        self._episode_over = True

    # -- what an agent needs besides the Gymnasium API -------------------------------------------

    @property
    def instructions(self) -> str:
        """The system message an agent is given for the current task."""
        raise NotImplementedError

    def parse_action(self, reply: str) -> str:
        """Read the action out of a free-form model reply. Never raises."""
        raise NotImplementedError

    def reference_solution(self) -> list[str]:
        """Actions that solve the current task (walkthrough, solver path or gold answer)."""
        raise NotImplementedError

    def contexts(self) -> dict[str, str]:
        """Contexts this env ships, by name (a handbook, a system prompt, the full rules...): text that can
        be given to an agent beside the instructions, and distilled. None by default."""
        return {}

    # -- task selection ---------------------------------------------------------------------------

    def select_task(self, options: dict[str, Any] | None) -> tuple[str, int]:
        """The (split, index) that ``options`` asks for; a seeded random index when none is given."""
        options = dict(options or {})
        split = options.get("split", self.default_split)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        size = self.split_sizes[split]
        index = options.get("index")
        if index is None:
            index = int(self.np_random.integers(size))
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < size:
            raise ValueError(f"task index {index!r} out of range for split {split!r} (size {size})")
        return split, int(index)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"options must be a dict such as {{'split': 'test', 'index': 0}}, got {options!r}")
        split, index = self.select_task(options)
        observation, info = self._reset_task(split, index)
        info = {"split": split, "index": index, "success": False, **info}
        self._last_observation = observation
        self._episode_over = False
        return observation, info

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply one action. Any input is accepted: it is sanitised before the game sees it."""
        if self._episode_over:
            raise gym.error.ResetNeeded("call reset() before step(): the episode is over or not started")
        observation, reward, terminated, truncated, info = self._step(
            sanitize_action(action, self.max_action_chars)
        )
        info.setdefault("success", False)
        self._last_observation = observation
        self._episode_over = terminated or truncated
        return observation, float(reward), terminated, truncated, info

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        """Start task ``index`` of ``split``; return the first observation and info with ``task_id``."""
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply a sanitised action; return the Gymnasium step tuple (info with ``task_id``)."""
        raise NotImplementedError

    def render(self) -> str | None:
        return self._last_observation if self.render_mode == "ansi" else None
