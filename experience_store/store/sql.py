"""SQL plumbing every part of the store shares: SQLite errors as store errors, record fields as JSON,
id lists in chunks."""

from __future__ import annotations

import functools
import math
import numbers
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from experience_store.errors import InvalidRecord, StoreCorrupt, StoreError, StoreLocked, StoreReadOnly
from experience_store.records import DistillRun, KnowledgeItem, KnowledgeSet, json_text

DEFAULT_TIMEOUT = 30.0  # seconds a writer waits for another writer's lock
_CHUNK = 500  # ids per "IN (...)" lookup, well under SQLite's bound-parameter limit

F = TypeVar("F", bound=Callable[..., Any])


def translate(exc: sqlite3.Error, path: Path, timeout: float) -> StoreError:
    """The store error for an SQLite error, one line naming the file."""
    name = getattr(exc, "sqlite_errorname", "")
    message = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in message:
        return StoreLocked(f"{path} is locked by another process (waited {timeout:g} s for it)")
    if name in ("SQLITE_CANTOPEN", "SQLITE_READONLY_DIRECTORY") and not os.access(path.parent, os.W_OK):
        # e.g. a -wal file (which may hold committed records) but no -shm, in a folder this process cannot write
        return StoreError(f"{path} cannot be opened: SQLite must create its -wal or -shm file in a read-only folder")
    if name.startswith("SQLITE_READONLY") or "readonly database" in message:
        return StoreReadOnly(f"{path} cannot be written: {message}")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in message or "not a database" in message:
        return StoreCorrupt(f"{path} is corrupt: {message}")
    return StoreError(f"{path}: {message}")


def translated(method: F) -> F:
    """Turn SQLite errors raised by a store method into store errors."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.timeout) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(exc, self.path) from None

    return wrapper  # type: ignore[return-value]


def unencodable(exc: UnicodeEncodeError, path: Path) -> StoreError:
    """The error for text SQLite cannot take: records are validated, so this is a looked-up value (an id,
    an env name from a command line with bytes that are not UTF-8)."""
    return StoreError(f"{path}: {exc.object[exc.start : exc.end]!r} is not valid Unicode (a lone surrogate)")


def to_json(value: Any, what: str) -> str:
    try:
        return json_text(value)
    except ValueError as exc:
        raise InvalidRecord(f"{what} {exc}") from None


def is_finite(value: Any) -> bool:
    return is_real(value) and math.isfinite(value)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(n: int) -> str:
    return ",".join("?" * n)


def children_by_position(
    conn: sqlite3.Connection, table: str, parent: str, child: str, parent_ids: Sequence[int]
) -> dict[int, list[Any]]:
    """Each parent's ``child`` values in ``table`` (a link table with a ``position`` column), in position order."""
    found: dict[int, list[Any]] = {}
    for chunk in chunks(parent_ids):
        sql = f"SELECT {parent}, {child} FROM {table} WHERE {parent} IN ({marks(len(chunk))}) ORDER BY {parent}, position"
        for parent_id, value in conn.execute(sql, chunk):
            found.setdefault(parent_id, []).append(value)
    return found


def revalidate(record: KnowledgeItem | KnowledgeSet | DistillRun) -> None:
    """Re-run a record's own checks (its fields may have changed since construction)."""
    try:
        record.__post_init__()
        if isinstance(record, KnowledgeSet):
            for item in record.items:
                item.__post_init__()
    except ValueError as exc:
        raise InvalidRecord(f"{type(record).__name__} {getattr(record, 'uuid', '?')}: {exc}") from None
