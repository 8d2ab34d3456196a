"""Checks on a store file before SQLite opens it: what it is, whether it is whole, whether it may be written."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from experience_store import schema
from experience_store.errors import NotAStore, StoreCorrupt, StoreError, StoreReadOnly, StoreTooNew
from experience_store.store.sql import DEFAULT_TIMEOUT, translate

_SQLITE_MAGIC = b"SQLite format 3\x00"


def beside(path: Path, suffix: str) -> Path:
    """One of SQLite's files beside the store: ``-wal`` or ``-shm``."""
    return path.with_name(path.name + suffix)


def read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only.

    Reading a WAL store needs its ``-wal`` and ``-shm`` files, which SQLite creates if missing. In a folder
    this process cannot write, with no ``-wal`` there, it cannot; but then no writer is running (a writer
    would have created it) and every record is in the file, so the file is opened as immutable.
    """
    uri = path.absolute().as_uri() + "?mode=ro"
    return uri if beside(path, "-wal").exists() or os.access(path.parent, os.W_OK) else uri + "&immutable=1"


def check_header(path: Path, header: bytes) -> None:
    """Refuse a file whose SQLite header is damaged or that is shorter than its header says."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StoreCorrupt(f"{path} is corrupt: invalid page size {page_size} in the header")
    pages = int.from_bytes(header[28:32], "big")
    size_valid = header[24:28] == header[92:96]  # the header's page count is current (SQLite file format)
    wal = beside(path, "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    size = path.stat().st_size
    # With frames in the WAL the file may legitimately lag (a checkpoint was interrupted); recovery fixes it.
    if size_valid and pages and not wal_bytes and size < pages * page_size:
        raise StoreCorrupt(f"{path} is truncated: {size:,} bytes, its header says {pages * page_size:,}")


def check_identity(path: Path, version: int, application_id: int, tables: int, *, readonly: bool) -> None:
    if application_id != schema.APPLICATION_ID:
        if version == 0 and tables == 0 and not readonly:
            return  # an empty SQLite database: it becomes a store
        raise NotAStore(f"{path} is an SQLite database but not an experience store")
    if version > schema.SCHEMA_VERSION:
        raise StoreTooNew(
            f"{path} has schema version {version}, newer than this tool's {schema.SCHEMA_VERSION}: "
            "upgrade opcd-agents to open it (the file was not changed)"
        )
    if version < schema.SCHEMA_VERSION and readonly:
        raise StoreError(f"{path} has schema version {version}: open it read-write once to upgrade it")


def inspect_store(
    path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Raise what ``ExperienceStore.open(path, readonly=readonly)`` raises before it writes, writing nothing
    (e.g. to check a store before a long job that ends by writing to it); return the store's schema version
    (0: a new or empty file)."""
    path = Path(path)
    if not path.exists():
        if readonly:
            raise NotAStore(f"{path}: no such store")
        if not path.parent.is_dir():
            raise NotAStore(f"{path}: folder {path.parent} does not exist")
        check_writable(path)
        return 0
    if path.is_dir():
        raise NotAStore(f"{path} is a directory, not a file")
    if not path.is_file():
        raise NotAStore(f"{path} is not a file")
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError as exc:
        raise StoreError(f"{path} cannot be read: {exc.strerror}") from None
    if not header:
        if readonly:
            raise NotAStore(f"{path} is an empty file, not an experience store")
        check_writable(path)
        return 0
    if not header.startswith(_SQLITE_MAGIC):
        raise NotAStore(f"{path} is not an experience store (not an SQLite database)")
    if len(header) < 100:
        raise StoreCorrupt(f"{path} is truncated: {len(header)} bytes, shorter than an SQLite header")
    check_header(path, header)
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=timeout, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise translate(exc, path, timeout) from exc
    check_identity(path, version, application_id, tables, readonly=readonly)
    if not readonly:
        check_writable(path)
    return version


def check_writable(path: Path) -> None:
    """Refuse to write a store whose file or folder this process cannot write (SQLite writes its ``-wal``
    and ``-shm`` files beside the store)."""
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreReadOnly(f"{path} cannot be written: no write permission on the file")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        verb = "written" if path.exists() else "created"
        raise StoreReadOnly(f"{path} cannot be {verb}: no write permission on its folder {path.absolute().parent}")


