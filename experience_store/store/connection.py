"""The store's connection: opening (with the file checks first), pragmas, migrations, transactions."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from experience_store import schema
from experience_store.errors import StoreError, StoreReadOnly
from experience_store.store.files import check_identity, inspect_store, read_only_uri
from experience_store.store.sql import DEFAULT_TIMEOUT, chunks, marks, translate, translated

S = TypeVar("S", bound="StoreConnection")


class StoreConnection:
    """The connection to one store file, which ``ExperienceStore`` builds on (see there)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool, timeout: float) -> None:
        """Use ``ExperienceStore.open``."""
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.timeout = timeout
        self._savepoints = itertools.count()

    @classmethod
    def open(
        cls: type[S], path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> S:
        """Open the store at ``path``, creating it if missing (unless ``readonly``).

        ``timeout``: seconds to wait for another process's write lock before ``StoreLocked``. Raises
        ``NotAStore``, ``StoreCorrupt``, ``StoreTooNew`` and, unless ``readonly``, ``StoreReadOnly`` (the file
        or its folder is not writable) at once, without writing to the file.
        """
        path = Path(path)
        version = inspect_store(path, readonly=readonly, timeout=timeout)
        try:
            target = read_only_uri(path) if readonly else str(path)
            conn = sqlite3.connect(target, uri=readonly, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise translate(exc, path, timeout) from exc
        store = cls(conn, path, readonly=readonly, timeout=timeout)
        try:
            store._configure(version)
        except BaseException:
            store.close()
            raise
        return store

    @translated
    def _configure(self, version: int) -> None:
        if self.readonly:
            self._conn.execute("PRAGMA query_only = ON")
            return
        self._conn.execute("PRAGMA foreign_keys = ON")
        if self._pragma("journal_mode") != "wal":
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        if version != schema.SCHEMA_VERSION:
            self._migrate()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    @property
    @translated
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the writes inside as ONE transaction: all are committed, or on an exception none.

        Waits up to ``timeout`` seconds for other writers (then ``StoreLocked``). Nested, it is a
        savepoint of the outer transaction.
        """
        self._require_writable()
        if self._conn.in_transaction:
            name = f"nested_{next(self._savepoints)}"
            self._execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # must not hide the error that caused it
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                raise
            self._execute(f"RELEASE {name}")
            return
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
            self._execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make the reads inside see one consistent state of the store (e.g. for an export).

        Writers are not blocked; inside a transaction it is that transaction's view.
        """
        if self._conn.in_transaction:
            yield
            return
        self._execute("BEGIN DEFERRED")
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        self._execute("COMMIT")

    def _rollback(self) -> None:
        """Undo the open transaction, if any; an error doing so must not hide the error that caused it."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _execute(self, sql: str) -> None:
        try:
            self._conn.execute(sql)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.timeout) from exc

    def _require_writable(self) -> None:
        if self.readonly:
            raise StoreReadOnly(f"{self.path} is open read-only")

    def _migrate(self) -> None:
        with self.transaction():
            # Re-checked under the write lock: another process may have created or upgraded it meanwhile.
            version = self._pragma("user_version")
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            check_identity(self.path, version, self._pragma("application_id"), tables, readonly=False)
            for statements in schema.MIGRATIONS[version:]:
                for sql in statements:
                    self._conn.execute(sql)
            self._conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            self._conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    def _pragma(self, name: str) -> Any:
        return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def _existing(self, table: str, uuids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(uuids):
            sql = f"SELECT uuid FROM {table} WHERE uuid IN ({marks(len(chunk))})"
            found.update(row[0] for row in self._conn.execute(sql, chunk))
        return found

    def _id(self, table: str, uuid: str, missing: type[StoreError], what: str) -> int:
        row = self._conn.execute(f"SELECT id FROM {table} WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            raise missing(f"{self.path}: no {what} {uuid!r}")
        return row[0]
