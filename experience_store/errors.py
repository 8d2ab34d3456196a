"""Errors the store raises. Each message is one line that names the file (or record) and the problem."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class NotAStore(StoreError):
    """The path is missing (read-only open), not a file, or a file that is not an experience store."""


class StoreCorrupt(StoreError):
    """The file is an SQLite database but damaged (truncated, malformed pages)."""


class StoreLocked(StoreError):
    """Another process held the write lock for longer than the timeout."""


class StoreTooNew(StoreError):
    """The store was written by a newer version of this tool; it is refused, never rewritten."""


class StoreReadOnly(StoreError):
    """The store cannot be written: it was opened read-only, or its file or folder is not writable."""


class DuplicateRecord(StoreError):
    """A record with this uuid is already stored (episodes are append-only)."""


class RecordNotFound(StoreError, KeyError):
    """No record with this id. Also a ``KeyError``, so ``except KeyError`` works."""

    __str__ = Exception.__str__  # KeyError would quote the message


class EpisodeNotFound(RecordNotFound):
    """No episode with this uuid (or unique uuid prefix)."""


class KnowledgeSetNotFound(RecordNotFound):
    """No knowledge set with this uuid."""


class RunNotFound(RecordNotFound):
    """No distillation run with this uuid."""


class MixedEnvSettings(StoreError):
    """Episodes of one env played with other constructor arguments than those already stored for it."""


class InvalidRecord(StoreError, ValueError):
    """A record failed validation; from a file, the message starts with ``file:line:``."""

    def __init__(self, message: str, *, source: str | Path | None = None, line: int | None = None) -> None:
        self.source, self.line, self.reason = source, line, message
        where = f"{source}:{line}: " if source is not None and line is not None else ""
        super().__init__(f"{where}{message}")
