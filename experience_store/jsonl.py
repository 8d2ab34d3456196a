"""JSONL export, import and merge: moving records between stores and machines.

A JSONL file is UTF-8 text, one JSON object per line, each with a ``"type"``. Timestamps are unix
seconds; ``uuid`` is every record's identity (import and merge skip records whose uuid is already
stored, so both are idempotent). Every field is written on export; on import, fields whose record
has a default may be left out (except ``uuid``), and an unknown field is an error.

``{"type": "episode", ...}``: one ``agents.records.Episode``::

    uuid: str, env_id: str, task_id: str, split: str, model: str, context_id: str | null,
    round: int, seed: int | null, success: bool, total_reward: float, wall_time_s: float,
    created_at: float, metadata: object, env_args: object (the env's constructor arguments; {} when
    left out, as in files written before it was recorded),
    turns: [{index: int, prompt_messages: [{role: str, content: str}, ...], reply: str,
             action: str, reward: float, observation: str, prompt_tokens: int,
             completion_tokens: int, reply_token_ids: [int, ...]}, ...]

``{"type": "knowledge_item", ...}``::

    uuid: str, text: str, kind: "experience" | "system_prompt" | "raw_trace", env_id: str | null,
    model: str, round: int, source_episodes: [episode uuid, ...], metadata: object, created_at: float

``{"type": "knowledge_set", ...}``: its items by uuid, in order; each must be a knowledge_item of the
same file or already in the store::

    uuid: str, env_id: str, round: int, items: [knowledge item uuid, ...], token_count: int,
    validation_score: float | null, validation_n: int | null, selected: bool, metadata: object,
    created_at: float

``{"type": "run", ...}``: a distillation run::

    uuid: str, config: object, status: "running" | "completed" | "failed" | "cancelled",
    checkpoint_path: str | null, evaluation: object, metrics: {name: [[step, value], ...]},
    created_at: float, finished_at: float | null
    (a metric value that is not finite is the string "NaN", "Infinity" or "-Infinity")

Text must be valid Unicode (no lone surrogate such as ``"\\ud800"``); ``metadata``, ``config`` and
``evaluation`` are JSON objects without NaN or infinities, nested at most 100 levels deep.

Import checks every line, and the store it imports into, before it writes anything, then adds all
records in one transaction: a bad line is reported as ``file:line: problem`` and nothing is imported (a
store the import was to create is removed again). ``check_jsonl`` makes the same checks, writing nothing.
A knowledge set marked selected stays selected only if the store has no selected set for that env yet
(the store's choice is kept).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import reprlib
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

from agents.records import Episode, Turn
from experience_store.errors import InvalidRecord, StoreError
from experience_store.records import DistillRun, KnowledgeItem, KnowledgeSet, validate_episode
from experience_store.store import DEFAULT_TIMEOUT, ExperienceStore, inspect_store

RECORD_TYPES: tuple[str, ...] = ("episode", "knowledge_item", "knowledge_set", "run")
_BATCH = 500  # episodes per insert while importing or merging
Record = Episode | KnowledgeItem | KnowledgeSet | DistillRun
PathLike = str | os.PathLike[str]
# JSON has no NaN or infinity: a metric value that is one is written as a string, as in protobuf's JSON.
_NON_FINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NON_FINITE = frozenset(_NON_FINITE_NAMES.values())


@dataclass
class TransferCounts:
    """Records added and records skipped (uuid already present), per record type."""

    added: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


def record_type(record: Record) -> str:
    """The JSONL ``type`` of a record."""
    if isinstance(record, Episode):
        return "episode"
    if isinstance(record, KnowledgeItem):
        return "knowledge_item"
    return "knowledge_set" if isinstance(record, KnowledgeSet) else "run"


def to_json(record: Record) -> dict[str, Any]:
    """The JSONL object for a record (a knowledge set lists its items by uuid)."""
    data = {"type": record_type(record), **_shallow(record)}
    if isinstance(record, DistillRun):
        data["metrics"] = {
            name: [[step, _NON_FINITE_NAMES.get(str(value), value)] for step, value in points]
            for name, points in record.metrics.items()
        }
    if isinstance(record, KnowledgeSet):
        data["items"] = [item.uuid for item in record.items]
    if isinstance(record, Episode):
        data["turns"] = [_shallow(turn) for turn in data.pop("turns")]  # last: the long part of the line
    return data


def _shallow(record: Any) -> dict[str, Any]:
    # Not dataclasses.asdict: its deep copy would triple the export time; the dict is only serialised.
    return {name: getattr(record, name) for name in _field_names(type(record))[0]}


def from_json(data: Any, *, validate: bool = True) -> tuple[Record, list[str]]:
    """The record for a JSONL object, validated; for a knowledge set, also its item uuids (its items
    are left empty). Raises ``ValueError`` naming the problem. ``validate=False`` skips the episode
    checks that ``ExperienceStore.add_episodes`` repeats anyway."""
    if not isinstance(data, dict):
        raise ValueError("a record must be a JSON object")
    kind = data.get("type")
    if kind not in RECORD_TYPES:
        raise ValueError(f"unknown record type {kind!r} (expected one of {', '.join(RECORD_TYPES)})")
    values = {key: value for key, value in data.items() if key != "type"}
    if "uuid" not in values:
        raise ValueError(f"{kind}: missing field 'uuid'")
    item_uuids: list[str] = []
    try:
        if kind == "episode":
            turns = values.get("turns", [])
            if not isinstance(turns, list):
                raise ValueError("turns must be a list")
            values["turns"] = [Turn(**_arguments(Turn, turn, f"turns[{i}]")) for i, turn in enumerate(turns)]
            episode = Episode(**_arguments(Episode, values, "episode"))
            if validate:
                validate_episode(episode)
            return episode, item_uuids
        if kind == "knowledge_set":
            item_uuids = values.pop("items", [])
            if not isinstance(item_uuids, list) or not all(isinstance(u, str) for u in item_uuids):
                raise ValueError("items must be a list of knowledge item uuids")
            return KnowledgeSet(items=[], **_arguments(KnowledgeSet, values, kind, skip=("items",))), item_uuids
        if kind == "run" and isinstance(values.get("metrics"), dict):
            values["metrics"] = {name: _metric_points(points) for name, points in values["metrics"].items()}
        cls = KnowledgeItem if kind == "knowledge_item" else DistillRun
        return cls(**_arguments(cls, values, kind)), item_uuids
    except ValueError as exc:
        raise ValueError(f"{kind} {reprlib.repr(values['uuid'])}: {exc}") from None


def _metric_points(points: Any) -> Any:
    """A run's metric series from JSON, with "NaN" / "Infinity" / "-Infinity" read back as floats."""
    if not isinstance(points, list):
        return points  # DistillRun reports it
    def decode(point: Any) -> Any:
        named = isinstance(point, list) and len(point) == 2 and isinstance(point[1], str) and point[1] in _NON_FINITE
        return [point[0], float(point[1])] if named else point

    return [decode(point) for point in points]


def _arguments(cls: type, values: Any, what: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{what} must be a JSON object")
    names, required = _field_names(cls)
    if unknown := sorted(set(values).difference(names, skip)):
        raise ValueError(f"{what}: unknown field {unknown[0]!r}")
    if missing := [name for name in required if name not in values and name not in skip]:
        raise ValueError(f"{what}: missing field {missing[0]!r}")
    return values


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A record class's field names in order, and those without a default."""
    required = tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)
    return tuple(f.name for f in fields(cls)), required


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for every non-blank line; ``InvalidRecord`` for an unreadable one."""
    try:
        file = path.open("rb")
    except OSError as exc:
        raise StoreError(f"{path} cannot be read: {exc.strerror}") from None
    with file:
        for number, raw in enumerate(file, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRecord("not UTF-8 text", source=path, line=number) from None
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise InvalidRecord(f"not valid JSON ({exc})", source=path, line=number) from None
            except RecursionError:
                raise InvalidRecord("JSON nested too deeply", source=path, line=number) from None
            yield number, data


def _records(path: Path, *, validate: bool = True) -> Iterator[tuple[int, Record, list[str]]]:
    for number, data in _lines(path):
        try:
            record, item_uuids = from_json(data, validate=validate)
        except ValueError as exc:
            raise InvalidRecord(str(exc), source=path, line=number) from None
        yield number, record, item_uuids


def write_jsonl(store: ExperienceStore, out: TextIO) -> Counter[str]:
    """Write every record of ``store`` to ``out`` (one consistent snapshot); return counts per type."""
    counts: Counter[str] = Counter()
    with store.snapshot():
        records = itertools.chain(store.episodes(), store.knowledge_items(), store.knowledge_sets(), store.runs())
        for record in records:
            data = to_json(record)
            out.write(json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n")
            counts[data["type"]] += 1
    return counts


def export_jsonl(
    store_path: PathLike, destination: PathLike | TextIO, *, timeout: float = DEFAULT_TIMEOUT
) -> Counter[str]:
    """Export a store (opened read-only) to a JSONL file or stream; return counts per record type.

    A file is written beside its destination and renamed into place, so it is complete or absent.
    """
    with ExperienceStore.open(store_path, readonly=True, timeout=timeout) as store:
        if not isinstance(destination, (str, os.PathLike)):
            return write_jsonl(store, destination)
        path = Path(destination)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise StoreError(f"{path} cannot be written: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
                counts = write_jsonl(store, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return counts


@dataclass
class _Checked:
    """What a first pass over a JSONL file found: counts, and the (few) knowledge records it holds."""

    counts: Counter[str] = field(default_factory=Counter)
    items: dict[str, KnowledgeItem] = field(default_factory=dict)  # the file's
    sets: list[tuple[int, KnowledgeSet, list[str]]] = field(default_factory=list)  # (line, set, item uuids)
    stored: dict[str, KnowledgeItem] = field(default_factory=dict)  # the store's, if sets need them


def check_jsonl(
    path: PathLike, store_path: PathLike | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> Counter[str]:
    """Check a JSONL file as ``import_jsonl(path, store_path)`` does, writing nothing: it raises the same
    errors (with no ``store_path``, as for a new store). Return counts per record type."""
    return _check(Path(path), None if store_path is None else Path(store_path), timeout).counts


def _check(path: Path, store_path: Path | None, timeout: float) -> _Checked:
    """Every check an import makes before it writes: each line, the store file (as opening it to write
    checks it), and that every set's items are in the file or the store."""
    checked = _Checked()
    for number, record, item_uuids in _records(path):
        if isinstance(record, KnowledgeItem):
            checked.items.setdefault(record.uuid, record)
        elif isinstance(record, KnowledgeSet):
            checked.sets.append((number, record, item_uuids))
        checked.counts[record_type(record)] += 1
    version = 0 if store_path is None else inspect_store(store_path, timeout=timeout)  # 0: a new store
    unresolved = [(n, uuid) for n, _, uuids in checked.sets for uuid in uuids if uuid not in checked.items]
    if unresolved and store_path is not None and version:
        with ExperienceStore.open(store_path, readonly=True, timeout=timeout) as store:
            checked.stored = {item.uuid: item for item in store.knowledge_items()}
    for number, uuid in unresolved:
        if uuid not in checked.stored:
            raise InvalidRecord(f"knowledge set refers to unknown knowledge item {uuid!r}", source=path, line=number)
    return checked


@contextlib.contextmanager
def _removed_on_failure(path: Path) -> Iterator[None]:
    """If ``path`` does not exist yet and the block fails, delete the store it created there (and SQLite's
    ``-wal`` and ``-shm`` files beside it): a failed import or merge leaves no empty store behind."""
    new = not path.exists()
    try:
        yield
    except BaseException:
        if new:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        raise


def import_jsonl(
    source: PathLike, store_path: PathLike, *, timeout: float = DEFAULT_TIMEOUT
) -> TransferCounts:
    """Import a JSONL file into the store at ``store_path`` (created if missing): all records or none.

    The file and the store are checked (``check_jsonl``) before the store is opened; a bad line raises
    ``InvalidRecord`` with its line number. Records whose uuid is already stored are skipped.
    """
    path, store_path = Path(source), Path(store_path)
    checked = _check(path, store_path, timeout)
    counts = TransferCounts()
    known = checked.stored | checked.items
    with _removed_on_failure(store_path), ExperienceStore.open(store_path, timeout=timeout) as store:
        with store.transaction():
            batch: list[Episode] = []
            for _, record, _ in _records(path, validate=False):  # checked above; add_episodes checks again
                if isinstance(record, Episode):
                    batch.append(record)
                    if len(batch) >= _BATCH:
                        _add_episodes(store, batch, counts)
                elif isinstance(record, DistillRun):
                    _count(counts, "run", store.add_run(record, skip_existing=True))
            _add_episodes(store, batch, counts)
            added = store.add_knowledge_items(checked.items.values(), skip_existing=True)
            counts.added["knowledge_item"] += added
            counts.skipped["knowledge_item"] += len(checked.items) - added
            for _, knowledge_set, item_uuids in checked.sets:
                _add_set(store, replace(knowledge_set, items=[known[u] for u in item_uuids]), counts)
    return counts


def merge_stores(
    target_path: PathLike, source_paths: Sequence[PathLike], *, timeout: float = DEFAULT_TIMEOUT
) -> TransferCounts:
    """Add every record of the source stores to the target (created if missing), de-duplicated by uuid.

    Sources are opened read-only and all validated before the target is opened; the whole merge is one
    transaction. Merging again adds nothing.
    """
    target_path = Path(target_path)
    counts = TransferCounts()
    sources: list[ExperienceStore] = []
    try:
        for source_path in source_paths:
            source = ExperienceStore.open(source_path, readonly=True, timeout=timeout)
            sources.append(source)
            if target_path.exists() and target_path.samefile(source.path):
                raise StoreError(f"{source.path} is the target store itself")
        with (
            _removed_on_failure(target_path),
            ExperienceStore.open(target_path, timeout=timeout) as target,
            target.transaction(),
        ):
            for source in sources:
                with source.snapshot():
                    batch: list[Episode] = []
                    for episode in source.episodes():
                        batch.append(episode)
                        if len(batch) >= _BATCH:
                            _add_episodes(target, batch, counts)
                    _add_episodes(target, batch, counts)
                    items = source.knowledge_items()
                    added = target.add_knowledge_items(items, skip_existing=True)
                    counts.added["knowledge_item"] += added
                    counts.skipped["knowledge_item"] += len(items) - added
                    for knowledge_set in source.knowledge_sets():
                        _add_set(target, knowledge_set, counts)
                    for run in source.runs():
                        _count(counts, "run", target.add_run(run, skip_existing=True))
    finally:
        for source in sources:
            source.close()
    return counts


def _add_episodes(store: ExperienceStore, batch: list[Episode], counts: TransferCounts) -> None:
    added = store.add_episodes(batch, skip_existing=True)
    counts.added["episode"] += added
    counts.skipped["episode"] += len(batch) - added
    batch.clear()


def _add_set(store: ExperienceStore, knowledge_set: KnowledgeSet, counts: TransferCounts) -> None:
    if knowledge_set.selected and store.selected_knowledge_set(knowledge_set.env_id) is not None:
        knowledge_set = replace(knowledge_set, selected=False)  # the store's own choice is kept
    _count(counts, "knowledge_set", store.add_knowledge_set(knowledge_set, skip_existing=True))


def _count(counts: TransferCounts, kind: str, added: bool) -> None:
    (counts.added if added else counts.skipped)[kind] += 1
