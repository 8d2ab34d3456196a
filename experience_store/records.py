"""The store's own records (knowledge items, knowledge sets, distillation runs) and record validation.

Episodes are ``agents.records.Episode``: the project has one episode record. ``validate_episode`` checks
one before it is stored or imported; the knowledge and run records check themselves on construction.
Every record has a ``uuid`` (its identity across stores) and ``created_at`` (unix seconds).
"""

from __future__ import annotations

import json
import math
import numbers
import reprlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from agents.records import Episode, Message

KnowledgeKind = Literal["experience", "system_prompt", "raw_trace", "exemplar"]
KNOWLEDGE_KINDS: tuple[str, ...] = get_args(KnowledgeKind)
RunStatus = Literal["running", "completed", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
MAX_JSON_DEPTH = 100  # nesting levels a free-form field (metadata, config, evaluation) may have


def _new_uuid() -> str:
    return uuid.uuid4().hex


@dataclass
class KnowledgeItem:
    """One piece of knowledge (a rule, a strategy, a system prompt) with its provenance."""

    text: str
    kind: KnowledgeKind = "experience"
    env_id: str | None = None
    model: str = ""  # the model that wrote it
    round: int = 0
    source_episodes: list[str] = field(default_factory=list)  # uuids of the episodes it was drawn from
    metadata: dict[str, Any] = field(default_factory=dict)  # free-form extras, JSON-serialisable
    uuid: str = field(default_factory=_new_uuid)
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        _check(
            [
                ("text", self.text, _is_text),
                ("env_id", self.env_id, _optional(_is_text)),
                ("model", self.model, _is_text),
                ("round", self.round, _is_int),
                ("source_episodes", self.source_episodes, _list_of(_is_text)),
                ("metadata", self.metadata, _is_json_object),
                ("uuid", self.uuid, _is_uuid),
                ("created_at", self.created_at, _is_number),
            ]
        )
        if self.kind not in KNOWLEDGE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(KNOWLEDGE_KINDS)}, got {self.kind!r}")


@dataclass
class KnowledgeSet:
    """An ordered selection of knowledge items for one env, under a token budget, with its validation score."""

    env_id: str
    items: list[KnowledgeItem]
    token_count: int
    round: int = 0
    validation_score: float | None = None  # e.g. the validation pass rate with this set in context
    validation_n: int | None = None  # how many validation episodes the score is over
    selected: bool = False  # at most one selected set per env: the one the agents use
    metadata: dict[str, Any] = field(default_factory=dict)
    uuid: str = field(default_factory=_new_uuid)
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        _check(
            [
                ("env_id", self.env_id, _is_text),
                ("token_count", self.token_count, _is_int),
                ("round", self.round, _is_int),
                ("validation_score", self.validation_score, _optional(_is_number)),
                ("validation_n", self.validation_n, _optional(_is_int)),
                ("selected", self.selected, _is_bool),
                ("metadata", self.metadata, _is_json_object),
                ("uuid", self.uuid, _is_uuid),
                ("created_at", self.created_at, _is_number),
            ]
        )
        if not isinstance(self.items, list) or not all(isinstance(i, KnowledgeItem) for i in self.items):
            raise ValueError("items must be a list of KnowledgeItem")
        if (self.validation_score is None) != (self.validation_n is None):
            raise ValueError("validation_score and validation_n go together")
        if self.validation_n is not None and self.validation_n <= 0:
            raise ValueError(f"validation_n must be positive, got {self.validation_n}")


@dataclass
class DistillRun:
    """A distillation run: its config, status, metrics over steps, checkpoint and evaluation results."""

    config: dict[str, Any]
    status: RunStatus = "running"
    checkpoint_path: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)  # e.g. pass rates with/without context
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> [(step, value)] by step
    uuid: str = field(default_factory=_new_uuid)
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def __post_init__(self) -> None:
        _check(
            [
                ("config", self.config, _is_json_object),
                ("checkpoint_path", self.checkpoint_path, _optional(_is_text)),
                ("evaluation", self.evaluation, _is_json_object),
                ("metrics", self.metrics, _is_dict),
                ("uuid", self.uuid, _is_uuid),
                ("created_at", self.created_at, _is_number),
                ("finished_at", self.finished_at, _optional(_is_number)),
            ]
        )
        if self.status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, got {self.status!r}")
        for name, points in self.metrics.items():
            if not (isinstance(name, str) and is_valid_unicode(name) and isinstance(points, list)):
                raise ValueError(f"metrics must map names (valid Unicode) to (step, value) lists, got {_short(name)}")
            where = f"metrics[{_short(name)}]"
            for point in points:
                if not (isinstance(point, (list, tuple)) and len(point) == 2):
                    raise ValueError(f"{where} must hold (step, value) pairs, got {_short(point)}")
                _check([(f"{where} step", point[0], _is_int), (f"{where} value", point[1], _is_float)])
            if len({step for step, _ in points}) != len(points):
                raise ValueError(f"{where} holds the same step twice")
        self.metrics = {name: [(step, value) for step, value in points] for name, points in self.metrics.items()}


def validate_episode(episode: Episode) -> None:
    """Raise ``ValueError`` naming the first field of ``episode`` that cannot be stored faithfully."""
    if not isinstance(episode, Episode):
        raise ValueError(f"expected an Episode, got {type(episode).__name__}")
    _check(
        [
            ("uuid", episode.uuid, _is_uuid),
            ("env_id", episode.env_id, _is_text),
            ("task_id", episode.task_id, _is_text),
            ("split", episode.split, _is_text),
            ("model", episode.model, _is_text),
            ("success", episode.success, _is_bool),
            ("total_reward", episode.total_reward, _is_number),
            ("context_id", episode.context_id, _optional(_is_text)),
            ("round", episode.round, _is_int),
            ("seed", episode.seed, _optional(_is_int)),
            ("wall_time_s", episode.wall_time_s, _is_number),
            ("metadata", episode.metadata, _is_json_object),
            ("env_args", episode.env_args, _is_json_object),
            ("created_at", episode.created_at, _is_number),
        ]
    )
    if not isinstance(episode.turns, list):
        raise ValueError("turns must be a list of Turn")
    previous, previous_prompt = -1, []
    for i, turn in enumerate(episode.turns):
        # A prompt usually repeats the previous one: only its new messages need checking.
        prompt = turn.prompt_messages
        new_messages = prompt[shared_prefix(previous_prompt, prompt) :] if isinstance(prompt, list) else prompt
        _check(
            [
                ("index", turn.index, _is_int),
                ("prompt_messages", new_messages, _messages),
                ("reply", turn.reply, _is_text),
                ("action", turn.action, _is_text),
                ("reward", turn.reward, _is_number),
                ("observation", turn.observation, _is_text),
                ("prompt_tokens", turn.prompt_tokens, _is_int),
                ("completion_tokens", turn.completion_tokens, _is_int),
                ("reply_token_ids", turn.reply_token_ids, _token_ids),
            ],
            where=f"turns[{i}].",
        )
        if turn.index <= previous:
            raise ValueError(f"turns[{i}].index must increase along the episode, got {turn.index} after {previous}")
        previous, previous_prompt = turn.index, prompt


def is_valid_unicode(text: str) -> bool:
    """Whether ``text`` can be stored: UTF-8 encodes it, i.e. it holds no lone surrogate such as ``\\ud800``."""
    if text.isascii():  # constant time in CPython
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_text(value: Any) -> str:
    """``value`` as the compact JSON text the store keeps it as; ``ValueError`` (saying what is wrong) for a
    value that cannot be kept and read back: not JSON, NaN or infinite, a lone surrogate, nested too deeply."""
    too_deep = f"is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"is not JSON-serialisable ({exc})") from None
    except RecursionError:
        raise ValueError(too_deep) from None
    # Fewer brackets than the limit cannot nest past it: walk the value only when there are more.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(value):
        raise ValueError(too_deep)
    if not is_valid_unicode(text):
        raise ValueError(_NOT_UNICODE)
    return text


def _too_deep(value: Any) -> bool:
    """Whether lists and dicts nest more than ``MAX_JSON_DEPTH`` levels deep in ``value`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, (list, tuple)):
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in value)
    return False


def shared_prefix(previous: list[Message], current: list[Message]) -> int:
    """How many leading messages ``current`` shares with ``previous``."""
    n = 0
    for a, b in zip(previous, current):
        if a != b:
            break
        n += 1
    return n


# Field checks: each returns what is wrong with a value, or None when it is fine.
Checker = Callable[[Any], str | None]
_NOT_UNICODE = "is not valid Unicode (it holds a lone surrogate)"
_REPR = reprlib.Repr()  # bounded: a value in an error message may be huge or deeply nested
_REPR.maxstring = _REPR.maxother = 60


def _check(fields: list[tuple[str, Any, Checker]], where: str = "") -> None:
    for name, value, checker in fields:
        problem = checker(value)
        if problem:
            raise ValueError(f"{where}{name} {problem}, got {_short(value)}")


def _short(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    return None if is_valid_unicode(value) else _NOT_UNICODE


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _is_int(value: Any) -> str | None:
    # type() first: the numbers ABCs (numpy integers) are slow to test and this runs per field per turn.
    integral = type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))
    return None if integral and -(2**63) <= value < 2**63 else "must be a 64-bit integer"


def _is_number(value: Any) -> str | None:
    real = type(value) in (float, int) or (isinstance(value, numbers.Real) and not isinstance(value, bool))
    try:
        return None if real and math.isfinite(value) else "must be a finite number"
    except OverflowError:  # an int too large for a float
        return "must be a finite number"


def _is_float(value: Any) -> str | None:
    """A number, NaN and infinities included (metrics: a diverging loss is data)."""
    real = type(value) is float or (isinstance(value, numbers.Real) and not isinstance(value, bool))
    return None if real else "must be a number"


def _is_dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be an object (dict)"


def _is_json_object(value: Any) -> str | None:
    """A dict the store can keep as JSON text (see ``json_text``)."""
    if not isinstance(value, dict):
        return "must be an object (dict)"
    try:
        json_text(value)
    except ValueError as exc:
        return str(exc)
    return None


def _is_uuid(value: Any) -> str | None:
    return None if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() else "must be a short id"


def _messages(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list"
    for message in value:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return "must be messages with 'role' and 'content'"
        for key, text in message.items():
            if not (isinstance(key, str) and isinstance(text, str)):
                return "must be messages of strings"
            if not (is_valid_unicode(key) and is_valid_unicode(text)):
                return _NOT_UNICODE
    return None


def _token_ids(value: Any) -> str | None:
    if isinstance(value, list) and all(type(t) is int and 0 <= t < 2**31 for t in value):
        return None
    return "must be a list of token ids"


def _optional(checker: Checker) -> Checker:
    return lambda value: None if value is None else checker(value)


def _list_of(checker: Checker) -> Checker:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return "must be a list"
        return next((problem for problem in map(checker, value) if problem), None)

    return check
