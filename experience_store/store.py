"""The experience store: episodes, knowledge items and sets, distillation runs, in one SQLite file.

>>> with ExperienceStore.open("exp.db") as store:
...     store.add_episodes(episodes)  # one transaction: all of them or none
...     wins = list(store.episodes(env="math", split="train", success=True))

Durability: WAL journal with ``synchronous=FULL`` (once a write call returns, its records survive a
killed process or a power cut), writes under ``BEGIN IMMEDIATE`` with a busy timeout, foreign keys on.
Opening inspects the file read-only first: a file that is not a store, is damaged, was written by a
newer version, or (to write) is in a file or folder this process cannot write is refused before anything
is written to it. A read-only open never writes the store file.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import numbers
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from agents.records import Episode, Message, Turn
from experience_store import schema
from experience_store.errors import (
    DuplicateRecord,
    EpisodeNotFound,
    InvalidRecord,
    KnowledgeSetNotFound,
    NotAStore,
    RunNotFound,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreReadOnly,
    StoreTooNew,
)
from experience_store.records import (
    RUN_STATUSES,
    DistillRun,
    KnowledgeItem,
    KnowledgeKind,
    KnowledgeSet,
    RunStatus,
    is_valid_unicode,
    json_text,
    shared_prefix,
    validate_episode,
)

DEFAULT_TIMEOUT = 30.0  # seconds a writer waits for another writer's lock
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PAGE = 256  # episodes fetched per query while iterating
_CHUNK = 500  # ids per "IN (...)" lookup, well under SQLite's bound-parameter limit
_EPISODE_COLUMNS = (
    "id, uuid, env_id, task_id, split, model, context_id, round, seed, success, total_reward, "
    "num_turns, prompt_tokens, completion_tokens, wall_time_s, created_at, metadata"
)
_TURN_COLUMNS = (
    "episode_id, idx, prompt_prefix, prompt_messages, reply, action, reward, observation, "
    "prompt_tokens, completion_tokens, reply_token_ids"
)
_ITEM_COLUMNS = "id, uuid, text, kind, env_id, model, round, metadata, created_at"
_SET_COLUMNS = (
    "id, uuid, env_id, round, token_count, validation_score, validation_n, selected, metadata, created_at"
)
_RUN_COLUMNS = "id, uuid, config, status, checkpoint_path, evaluation, created_at, finished_at"

Timestamp = float | datetime  # unix seconds or an aware/naive (local time) datetime
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EpisodeGroup:
    """Episode counts and outcomes for one (env, split, model)."""

    env_id: str
    split: str
    model: str
    episodes: int
    successes: int
    mean_return: float
    mean_turns: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass(frozen=True)
class StoreStats:
    """What a store holds, in totals and per (env, split, model)."""

    path: Path
    schema_version: int
    file_bytes: int  # the database file plus its WAL
    episodes: int
    turns: int
    knowledge_items: int
    knowledge_sets: int
    runs: int
    first_episode_at: float | None
    last_episode_at: float | None
    groups: list[EpisodeGroup]


def _translate(exc: sqlite3.Error, path: Path, timeout: float) -> StoreError:
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


def _translated(method: F) -> F:
    """Turn SQLite errors raised by a store method into store errors."""

    @functools.wraps(method)
    def wrapper(self: ExperienceStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.timeout) from exc
        except UnicodeEncodeError as exc:
            raise _unencodable(exc, self.path) from None

    return wrapper  # type: ignore[return-value]


def _unencodable(exc: UnicodeEncodeError, path: Path) -> StoreError:
    """The error for text SQLite cannot take: records are validated, so this is a looked-up value (an id,
    an env name from a command line with bytes that are not UTF-8)."""
    return StoreError(f"{path}: {exc.object[exc.start : exc.end]!r} is not valid Unicode (a lone surrogate)")


def _beside(path: Path, suffix: str) -> Path:
    """One of SQLite's files beside the store: ``-wal`` or ``-shm``."""
    return path.with_name(path.name + suffix)


def _ro_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only.

    Reading a WAL store needs its ``-wal`` and ``-shm`` files, which SQLite creates if missing. In a folder
    this process cannot write, with no ``-wal`` there, it cannot; but then no writer is running (a writer
    would have created it) and every record is in the file, so the file is opened as immutable.
    """
    uri = path.absolute().as_uri() + "?mode=ro"
    return uri if _beside(path, "-wal").exists() or os.access(path.parent, os.W_OK) else uri + "&immutable=1"


def _json(value: Any, what: str) -> str:
    try:
        return json_text(value)
    except ValueError as exc:
        raise InvalidRecord(f"{what} {exc}") from None


def _finite(value: Any) -> bool:
    return _real(value) and math.isfinite(value)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _timestamp(value: Timestamp) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _episode_rows(episode: Episode) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The episode's row (without id) and its turns' rows (without episode id), validated."""
    try:
        validate_episode(episode)
    except ValueError as exc:
        raise InvalidRecord(f"episode {getattr(episode, 'uuid', '?')}: {exc}") from None
    turns = []
    previous: list[Message] = []
    for turn in episode.turns:
        prefix = shared_prefix(previous, turn.prompt_messages)
        turns.append(
            (
                int(turn.index),
                prefix,
                _json(turn.prompt_messages[prefix:], f"episode {episode.uuid} turn {turn.index} prompt_messages"),
                turn.reply,
                turn.action,
                float(turn.reward),
                turn.observation,
                int(turn.prompt_tokens),
                int(turn.completion_tokens),
                _json(turn.reply_token_ids, f"episode {episode.uuid} turn {turn.index} reply_token_ids"),
            )
        )
        previous = turn.prompt_messages
    row = (
        episode.uuid,
        episode.env_id,
        episode.task_id,
        episode.split,
        episode.model,
        episode.context_id,
        int(episode.round),
        None if episode.seed is None else int(episode.seed),
        int(episode.success),
        float(episode.total_reward),
        len(episode.turns),
        int(episode.prompt_tokens),
        int(episode.completion_tokens),
        float(episode.wall_time_s),
        float(episode.created_at),
        _json(episode.metadata, f"episode {episode.uuid} metadata"),
    )
    return row, turns


def _check_header(path: Path, header: bytes) -> None:
    """Refuse a file whose SQLite header is damaged or that is shorter than its header says."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StoreCorrupt(f"{path} is corrupt: invalid page size {page_size} in the header")
    pages = int.from_bytes(header[28:32], "big")
    size_valid = header[24:28] == header[92:96]  # the header's page count is current (SQLite file format)
    wal = _beside(path, "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    size = path.stat().st_size
    # With frames in the WAL the file may legitimately lag (a checkpoint was interrupted); recovery fixes it.
    if size_valid and pages and not wal_bytes and size < pages * page_size:
        raise StoreCorrupt(f"{path} is truncated: {size:,} bytes, its header says {pages * page_size:,}")


def _check_identity(path: Path, version: int, application_id: int, tables: int, *, readonly: bool) -> None:
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
        _check_writable(path)
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
        _check_writable(path)
        return 0
    if not header.startswith(_SQLITE_MAGIC):
        raise NotAStore(f"{path} is not an experience store (not an SQLite database)")
    if len(header) < 100:
        raise StoreCorrupt(f"{path} is truncated: {len(header)} bytes, shorter than an SQLite header")
    _check_header(path, header)
    try:
        conn = sqlite3.connect(_ro_uri(path), uri=True, timeout=timeout, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise _translate(exc, path, timeout) from exc
    _check_identity(path, version, application_id, tables, readonly=readonly)
    if not readonly:
        _check_writable(path)
    return version


def _check_writable(path: Path) -> None:
    """Refuse to write a store whose file or folder this process cannot write (SQLite writes its ``-wal``
    and ``-shm`` files beside the store)."""
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreReadOnly(f"{path} cannot be written: no write permission on the file")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        verb = "written" if path.exists() else "created"
        raise StoreReadOnly(f"{path} cannot be {verb}: no write permission on its folder {path.absolute().parent}")


class ExperienceStore:
    """One store file. Open with ``ExperienceStore.open(path)``; use as a context manager to close it.

    Write methods each run in one transaction; ``transaction()`` groups several into one. Reads see
    every committed record, also those other processes commit while this store is open. A store object
    belongs to one thread; every process opens its own.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool, timeout: float) -> None:
        """Use ``ExperienceStore.open``."""
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.timeout = timeout
        self._savepoints = itertools.count()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> ExperienceStore:
        """Open the store at ``path``, creating it if missing (unless ``readonly``).

        ``timeout``: seconds to wait for another process's write lock before ``StoreLocked``. Raises
        ``NotAStore``, ``StoreCorrupt``, ``StoreTooNew`` and, unless ``readonly``, ``StoreReadOnly`` (the file
        or its folder is not writable) at once, without writing to the file.
        """
        path = Path(path)
        version = inspect_store(path, readonly=readonly, timeout=timeout)
        try:
            target = _ro_uri(path) if readonly else str(path)
            conn = sqlite3.connect(target, uri=readonly, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise _translate(exc, path, timeout) from exc
        store = cls(conn, path, readonly=readonly, timeout=timeout)
        try:
            store._configure(version)
        except BaseException:
            store.close()
            raise
        return store

    @_translated
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

    def __enter__(self) -> ExperienceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExperienceStore({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    @property
    @_translated
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    # -- transactions -------------------------------------------------------------------------------

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
            raise _translate(exc, self.path, self.timeout) from exc

    def _require_writable(self) -> None:
        if self.readonly:
            raise StoreReadOnly(f"{self.path} is open read-only")

    def _migrate(self) -> None:
        with self.transaction():
            # Re-checked under the write lock: another process may have created or upgraded it meanwhile.
            version = self._pragma("user_version")
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            _check_identity(self.path, version, self._pragma("application_id"), tables, readonly=False)
            for statements in schema.MIGRATIONS[version:]:
                for sql in statements:
                    self._conn.execute(sql)
            self._conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            self._conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    def _pragma(self, name: str) -> Any:
        return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def _existing(self, table: str, uuids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(uuids):
            sql = f"SELECT uuid FROM {table} WHERE uuid IN ({_marks(len(chunk))})"
            found.update(row[0] for row in self._conn.execute(sql, chunk))
        return found

    def _id(self, table: str, uuid: str, missing: type[StoreError], what: str) -> int:
        row = self._conn.execute(f"SELECT id FROM {table} WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            raise missing(f"{self.path}: no {what} {uuid!r}")
        return row[0]

    # -- episodes -----------------------------------------------------------------------------------

    @_translated
    def add_episodes(self, episodes: Iterable[Episode], *, skip_existing: bool = False) -> int:
        """Store ``episodes`` in ONE transaction (all or none); return how many were added.

        Every episode is validated first (``InvalidRecord``). An episode whose uuid is already stored
        raises ``DuplicateRecord``; with ``skip_existing`` it is skipped (how import and merge de-duplicate).
        """
        self._require_writable()
        batch = list(episodes)
        rows = [_episode_rows(episode) for episode in batch]
        uuids = [episode.uuid for episode in batch]
        if not skip_existing and len(set(uuids)) != len(uuids):
            raise DuplicateRecord(f"{self.path}: the batch holds the same episode uuid twice")
        with self.transaction():
            stored = self._existing("episodes", uuids)
            if stored and not skip_existing:
                raise DuplicateRecord(f"{self.path}: episode {min(stored)} is already stored (append-only)")
            next_id = self._conn.execute("SELECT coalesce(max(id), 0) + 1 FROM episodes").fetchone()[0]
            episode_rows, turn_rows = [], []
            for uuid, (row, turns) in zip(uuids, rows):
                if uuid in stored:
                    continue
                stored.add(uuid)
                episode_rows.append((next_id, *row))
                turn_rows.extend((next_id, *turn) for turn in turns)
                next_id += 1
            self._conn.executemany(f"INSERT INTO episodes ({_EPISODE_COLUMNS}) VALUES ({_marks(17)})", episode_rows)
            self._conn.executemany(f"INSERT INTO turns ({_TURN_COLUMNS}) VALUES ({_marks(11)})", turn_rows)
        return len(episode_rows)

    def episodes(
        self,
        *,
        env: str | None = None,
        split: str | None = None,
        success: bool | None = None,
        model: str | None = None,
        round: int | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: int | None = None,
    ) -> Iterator[Episode]:
        """Episodes matching every given filter, oldest first, read lazily page by page.

        Order is by ``created_at``, then by arrival. ``since`` / ``until`` bound ``created_at`` (inclusive /
        exclusive). Episodes committed during the iteration are included if they sort after its position.
        """
        where, params = self._episode_filter(env, split, success, model, round, since, until)
        return self._iter_episodes(where, params, limit)

    @_translated
    def count_episodes(
        self,
        *,
        env: str | None = None,
        split: str | None = None,
        success: bool | None = None,
        model: str | None = None,
        round: int | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
    ) -> int:
        """How many episodes ``episodes(...)`` with the same filters would yield."""
        where, params = self._episode_filter(env, split, success, model, round, since, until)
        return self._conn.execute(f"SELECT count(*) FROM episodes WHERE 1 {where}", params).fetchone()[0]

    @staticmethod
    def _episode_filter(
        env: str | None,
        split: str | None,
        success: bool | None,
        model: str | None,
        round: int | None,
        since: Timestamp | None,
        until: Timestamp | None,
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("env_id", env), ("split", split), ("model", model), ("round", round)):
            if value is not None:
                clauses.append(f" AND {column} = ?")
                params.append(value)
        if success is not None:
            clauses.append(" AND success = ?")
            params.append(int(success))
        if since is not None:
            clauses.append(" AND created_at >= ?")
            params.append(_timestamp(since))
        if until is not None:
            clauses.append(" AND created_at < ?")
            params.append(_timestamp(until))
        return "".join(clauses), params

    def _iter_episodes(self, where: str, params: list[Any], limit: int | None) -> Iterator[Episode]:
        # Keyset paging (after the last (created_at, id) seen) rather than one open cursor: an abandoned
        # iterator holds no read snapshot, and writes on this connection between pages are safe.
        after: tuple[Any, ...] = ()
        remaining = limit
        try:
            while remaining is None or remaining > 0:
                page = _PAGE if remaining is None else min(_PAGE, remaining)
                keyset = " AND (created_at, id) > (?, ?)" if after else ""
                sql = f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE 1 {where}{keyset} ORDER BY created_at, id LIMIT ?"
                rows = self._conn.execute(sql, (*params, *after, page)).fetchall()
                yield from self._load_episodes(rows)
                if len(rows) < page:
                    return
                after = (rows[-1][15], rows[-1][0])
                if remaining is not None:
                    remaining -= len(rows)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.timeout) from exc
        except UnicodeEncodeError as exc:
            raise _unencodable(exc, self.path) from None

    def _load_episodes(self, rows: list[tuple[Any, ...]]) -> list[Episode]:
        turns: dict[int, list[Turn]] = defaultdict(list)
        ids = [row[0] for row in rows]
        for chunk in _chunks(ids):
            sql = (
                f"SELECT {_TURN_COLUMNS} FROM turns "
                f"WHERE episode_id IN ({_marks(len(chunk))}) ORDER BY episode_id, idx"
            )
            for episode_id, index, prefix, messages, reply, action, reward, observation, ptok, ctok, ids in (
                self._conn.execute(sql, chunk)
            ):
                episode_turns = turns[episode_id]
                previous = episode_turns[-1].prompt_messages if episode_turns else []
                episode_turns.append(
                    Turn(
                        index=index,
                        prompt_messages=[dict(message) for message in previous[:prefix]] + json.loads(messages),
                        reply=reply,
                        action=action,
                        reward=reward,
                        observation=observation,
                        prompt_tokens=ptok,
                        completion_tokens=ctok,
                        reply_token_ids=json.loads(ids),
                    )
                )
        episodes = []
        for row in rows:
            episodes.append(
                Episode(
                    env_id=row[2],
                    task_id=row[3],
                    split=row[4],
                    model=row[5],
                    turns=turns.get(row[0], []),
                    success=bool(row[9]),
                    total_reward=row[10],
                    context_id=row[6],
                    round=row[7],
                    seed=row[8],
                    wall_time_s=row[14],
                    metadata=json.loads(row[16]),
                    uuid=row[1],
                    created_at=row[15],
                )
            )
        return episodes

    @_translated
    def episode(self, uuid: str) -> Episode:
        """The episode with this uuid, or with this unique uuid prefix; else ``EpisodeNotFound``."""
        row = self._conn.execute(f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE uuid = ?", (uuid,)).fetchone()
        if row is None and uuid:
            upper = uuid[:-1] + chr(min(ord(uuid[-1]) + 1, 0x10FFFF))
            sql = f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE uuid >= ? AND uuid < ? LIMIT 2"
            matches = self._conn.execute(sql, (uuid, upper)).fetchall()
            if len(matches) > 1:
                raise EpisodeNotFound(f"{self.path}: episode id {uuid!r} is ambiguous (several uuids start with it)")
            row = matches[0] if matches else None
        if row is None:
            raise EpisodeNotFound(f"{self.path}: no episode {uuid!r}")
        return self._load_episodes([row])[0]

    @_translated
    def stats(self) -> StoreStats:
        """Totals and per (env, split, model) outcomes."""
        sql = (
            "SELECT env_id, split, model, count(*), sum(success), avg(total_reward), avg(num_turns), "
            "sum(prompt_tokens), sum(completion_tokens) FROM episodes GROUP BY env_id, split, model "
            "ORDER BY env_id, split, model"
        )
        groups = [EpisodeGroup(*row) for row in self._conn.execute(sql)]
        episodes, turns, first, last = self._conn.execute(
            "SELECT count(*), coalesce(sum(num_turns), 0), min(created_at), max(created_at) FROM episodes"
        ).fetchone()

        def count(table: str) -> int:
            return self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        wal = _beside(self.path, "-wal")
        return StoreStats(
            path=self.path,
            schema_version=self._pragma("user_version"),
            file_bytes=self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
            episodes=episodes,
            turns=turns,
            knowledge_items=count("knowledge_items"),
            knowledge_sets=count("knowledge_sets"),
            runs=count("runs"),
            first_episode_at=first,
            last_episode_at=last,
            groups=groups,
        )

    # -- knowledge ----------------------------------------------------------------------------------

    @_translated
    def add_knowledge_items(self, items: Iterable[KnowledgeItem], *, skip_existing: bool = False) -> int:
        """Store knowledge items in one transaction; return how many were added (see ``add_episodes``)."""
        self._require_writable()
        batch = list(items)
        for item in batch:
            _revalidate(item)
        uuids = [item.uuid for item in batch]
        if not skip_existing and len(set(uuids)) != len(uuids):
            raise DuplicateRecord(f"{self.path}: the batch holds the same knowledge item uuid twice")
        added = 0
        with self.transaction():
            stored = self._existing("knowledge_items", uuids)
            if stored and not skip_existing:
                raise DuplicateRecord(f"{self.path}: knowledge item {min(stored)} is already stored")
            for item in batch:
                if item.uuid in stored:
                    continue
                stored.add(item.uuid)
                metadata = _json(item.metadata, f"knowledge item {item.uuid} metadata")
                cursor = self._conn.execute(
                    f"INSERT INTO knowledge_items ({_ITEM_COLUMNS}) VALUES (NULL, {_marks(8)})",
                    (item.uuid, item.text, item.kind, item.env_id, item.model, int(item.round), metadata,
                     float(item.created_at)),
                )
                self._conn.executemany(
                    "INSERT INTO knowledge_item_sources (item_id, position, episode_uuid) VALUES (?, ?, ?)",
                    [(cursor.lastrowid, i, source) for i, source in enumerate(item.source_episodes)],
                )
                added += 1
        return added

    @_translated
    def knowledge_items(
        self,
        *,
        env: str | None = None,
        kind: KnowledgeKind | None = None,
        model: str | None = None,
        round: int | None = None,
    ) -> list[KnowledgeItem]:
        """Knowledge items matching every given filter, oldest first."""
        clauses, params = [], []
        for column, value in (("env_id", env), ("kind", kind), ("model", model), ("round", round)):
            if value is not None:
                clauses.append(f" AND {column} = ?")
                params.append(value)
        sql = f"SELECT {_ITEM_COLUMNS} FROM knowledge_items WHERE 1 {''.join(clauses)} ORDER BY id"
        return list(self._load_items(self._conn.execute(sql, params).fetchall()).values())

    def _load_items(self, rows: list[tuple[Any, ...]]) -> dict[int, KnowledgeItem]:
        sources: dict[int, list[str]] = defaultdict(list)
        for chunk in _chunks([row[0] for row in rows]):
            sql = (
                "SELECT item_id, episode_uuid FROM knowledge_item_sources "
                f"WHERE item_id IN ({_marks(len(chunk))}) ORDER BY item_id, position"
            )
            for item_id, episode_uuid in self._conn.execute(sql, chunk):
                sources[item_id].append(episode_uuid)
        return {
            id_: KnowledgeItem(
                text=text,
                kind=kind,
                env_id=env_id,
                model=model,
                round=round_,
                source_episodes=sources.get(id_, []),
                metadata=json.loads(metadata),
                uuid=uuid,
                created_at=created_at,
            )
            for id_, uuid, text, kind, env_id, model, round_, metadata, created_at in rows
        }

    @_translated
    def add_knowledge_set(self, knowledge_set: KnowledgeSet, *, skip_existing: bool = False) -> bool:
        """Store a knowledge set and any of its items not stored yet; return whether it was added.

        A set with ``selected=True`` becomes its env's selected set.
        """
        self._require_writable()
        _revalidate(knowledge_set)
        ks = knowledge_set
        with self.transaction():
            if self._existing("knowledge_sets", [ks.uuid]):
                if skip_existing:
                    return False
                raise DuplicateRecord(f"{self.path}: knowledge set {ks.uuid} is already stored")
            self.add_knowledge_items(ks.items, skip_existing=True)
            item_ids = {}
            for chunk in _chunks([item.uuid for item in ks.items]):
                sql = f"SELECT uuid, id FROM knowledge_items WHERE uuid IN ({_marks(len(chunk))})"
                item_ids.update(self._conn.execute(sql, chunk).fetchall())
            score = None if ks.validation_score is None else float(ks.validation_score)
            n = None if ks.validation_n is None else int(ks.validation_n)
            metadata = _json(ks.metadata, f"knowledge set {ks.uuid} metadata")
            cursor = self._conn.execute(
                f"INSERT INTO knowledge_sets ({_SET_COLUMNS}) VALUES (NULL, {_marks(9)})",
                (ks.uuid, ks.env_id, int(ks.round), int(ks.token_count), score, n, 0, metadata, float(ks.created_at)),
            )
            self._conn.executemany(
                "INSERT INTO knowledge_set_items (set_id, position, item_id) VALUES (?, ?, ?)",
                [(cursor.lastrowid, i, item_ids[item.uuid]) for i, item in enumerate(ks.items)],
            )
            if ks.selected:
                self._select(cursor.lastrowid, ks.env_id)
        return True

    @_translated
    def knowledge_sets(self, *, env: str | None = None) -> list[KnowledgeSet]:
        """Knowledge sets (of ``env``, or all), oldest first, each with its items in order."""
        if env is None:
            rows = self._conn.execute(f"SELECT {_SET_COLUMNS} FROM knowledge_sets ORDER BY created_at, id")
        else:
            sql = f"SELECT {_SET_COLUMNS} FROM knowledge_sets WHERE env_id = ? ORDER BY created_at, id"
            rows = self._conn.execute(sql, (env,))
        return self._load_sets(rows.fetchall())

    @_translated
    def knowledge_set(self, set_id: str) -> KnowledgeSet:
        """The knowledge set with this uuid, or ``KnowledgeSetNotFound``."""
        row = self._conn.execute(f"SELECT {_SET_COLUMNS} FROM knowledge_sets WHERE uuid = ?", (set_id,)).fetchone()
        if row is None:
            raise KnowledgeSetNotFound(f"{self.path}: no knowledge set {set_id!r}")
        return self._load_sets([row])[0]

    @_translated
    def selected_knowledge_set(self, env: str) -> KnowledgeSet | None:
        """The set selected for ``env``, or None if none was selected yet."""
        sql = f"SELECT {_SET_COLUMNS} FROM knowledge_sets WHERE env_id = ? AND selected = 1"
        row = self._conn.execute(sql, (env,)).fetchone()
        return None if row is None else self._load_sets([row])[0]

    def _load_sets(self, rows: list[tuple[Any, ...]]) -> list[KnowledgeSet]:
        members: dict[int, list[int]] = defaultdict(list)
        for chunk in _chunks([row[0] for row in rows]):
            sql = (
                "SELECT set_id, item_id FROM knowledge_set_items "
                f"WHERE set_id IN ({_marks(len(chunk))}) ORDER BY set_id, position"
            )
            for set_id, item_id in self._conn.execute(sql, chunk):
                members[set_id].append(item_id)
        item_ids = sorted({item_id for ids in members.values() for item_id in ids})
        items: dict[int, KnowledgeItem] = {}
        for chunk in _chunks(item_ids):
            sql = f"SELECT {_ITEM_COLUMNS} FROM knowledge_items WHERE id IN ({_marks(len(chunk))})"
            items.update(self._load_items(self._conn.execute(sql, chunk).fetchall()))
        return [
            KnowledgeSet(
                env_id=env_id,
                items=[items[i] for i in members.get(id_, [])],
                token_count=token_count,
                round=round_,
                validation_score=score,
                validation_n=n,
                selected=bool(selected),
                metadata=json.loads(metadata),
                uuid=uuid,
                created_at=created_at,
            )
            for id_, uuid, env_id, round_, token_count, score, n, selected, metadata, created_at in rows
        ]

    @_translated
    def set_validation_score(self, set_id: str, score: float, n: int) -> None:
        """Record a set's validation score (e.g. a pass rate) measured over ``n`` episodes."""
        self._require_writable()
        if not _finite(score) or not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            raise InvalidRecord(f"validation score must be a finite number over n > 0 episodes, got {score!r}, n={n!r}")
        with self.transaction():
            set_row = self._id("knowledge_sets", set_id, KnowledgeSetNotFound, "knowledge set")
            sql = "UPDATE knowledge_sets SET validation_score = ?, validation_n = ? WHERE id = ?"
            self._conn.execute(sql, (float(score), n, set_row))

    @_translated
    def select_knowledge_set(self, set_id: str) -> None:
        """Make this set its env's selected set (the previously selected one, if any, is deselected)."""
        self._require_writable()
        with self.transaction():
            row = self._conn.execute("SELECT id, env_id FROM knowledge_sets WHERE uuid = ?", (set_id,)).fetchone()
            if row is None:
                raise KnowledgeSetNotFound(f"{self.path}: no knowledge set {set_id!r}")
            self._select(*row)

    def _select(self, row_id: int, env_id: str) -> None:
        self._conn.execute("UPDATE knowledge_sets SET selected = 0 WHERE env_id = ? AND selected = 1", (env_id,))
        self._conn.execute("UPDATE knowledge_sets SET selected = 1 WHERE id = ?", (row_id,))

    # -- distillation runs --------------------------------------------------------------------------

    def create_run(self, config: dict[str, Any]) -> str:
        """Start recording a run with status "running"; return its id (a uuid)."""
        try:
            run = DistillRun(config=config)
        except ValueError as exc:
            raise InvalidRecord(f"DistillRun: {exc}") from None
        self.add_run(run)
        return run.uuid

    @_translated
    def add_run(self, run: DistillRun, *, skip_existing: bool = False) -> bool:
        """Store a whole run record (with its metrics); return whether it was added."""
        self._require_writable()
        _revalidate(run)
        with self.transaction():
            if self._existing("runs", [run.uuid]):
                if skip_existing:
                    return False
                raise DuplicateRecord(f"{self.path}: run {run.uuid} is already stored")
            config = _json(run.config, f"run {run.uuid} config")
            evaluation = _json(run.evaluation, f"run {run.uuid} evaluation")
            finished_at = None if run.finished_at is None else float(run.finished_at)
            cursor = self._conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (NULL, {_marks(7)})",
                (run.uuid, config, run.status, run.checkpoint_path, evaluation, float(run.created_at), finished_at),
            )
            points = [(name, int(step), float(value)) for name, series in run.metrics.items() for step, value in series]
            self._conn.executemany(
                "INSERT INTO run_metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)",
                [(cursor.lastrowid, *point) for point in points],
            )
        return True

    @_translated
    def log_run_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Record metric values at ``step`` (a value logged again for the same name and step replaces it).

        NaN and infinities are kept: a diverging loss is worth recording, not a reason to stop a run.
        """
        self._require_writable()
        if not isinstance(step, int) or isinstance(step, bool) or not -(2**63) <= step < 2**63:
            raise InvalidRecord(f"step must be a 64-bit integer, got {step!r}")
        for name, value in metrics.items():
            if not (isinstance(name, str) and is_valid_unicode(name)):
                raise InvalidRecord(f"metric name {name!r} must be a string of valid Unicode")
            if not _real(value):
                raise InvalidRecord(f"metric {name!r} must be a number, got {value!r}")
        with self.transaction():
            row_id = self._id("runs", run_id, RunNotFound, "run")
            self._conn.executemany(
                "INSERT OR REPLACE INTO run_metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)",
                [(row_id, name, step, float(value)) for name, value in metrics.items()],
            )

    @_translated
    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        checkpoint_path: str | os.PathLike[str] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> None:
        """Record how a run ended; ``checkpoint_path`` / ``evaluation`` left None keep their stored values."""
        self._require_writable()
        if status not in RUN_STATUSES or status == "running":
            finished = ", ".join(s for s in RUN_STATUSES if s != "running")
            raise InvalidRecord(f"a run finishes as one of {finished}, got {status!r}")
        checkpoint = None if checkpoint_path is None else os.fspath(checkpoint_path)
        evaluation_json = None if evaluation is None else _json(evaluation, f"run {run_id} evaluation")
        with self.transaction():
            row_id = self._id("runs", run_id, RunNotFound, "run")
            self._conn.execute(
                "UPDATE runs SET status = ?, checkpoint_path = coalesce(?, checkpoint_path), "
                "evaluation = coalesce(?, evaluation), finished_at = ? WHERE id = ?",
                (status, checkpoint, evaluation_json, time.time(), row_id),
            )

    @_translated
    def runs(self, *, status: RunStatus | None = None) -> list[DistillRun]:
        """Runs (with ``status``, or all), oldest first, with their metrics."""
        where, params = ("", ()) if status is None else ("WHERE status = ?", (status,))
        rows = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at, id", params)
        return self._load_runs(rows.fetchall())

    @_translated
    def run(self, run_id: str) -> DistillRun:
        """The run with this id, or ``RunNotFound``."""
        row = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"{self.path}: no run {run_id!r}")
        return self._load_runs([row])[0]

    def _load_runs(self, rows: list[tuple[Any, ...]]) -> list[DistillRun]:
        metrics: dict[int, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
        for chunk in _chunks([row[0] for row in rows]):
            sql = (
                "SELECT run_id, name, step, value FROM run_metrics "
                f"WHERE run_id IN ({_marks(len(chunk))}) ORDER BY run_id, name, step"
            )
            for run_id, name, step, value in self._conn.execute(sql, chunk):
                metrics[run_id][name].append((step, math.nan if value is None else value))
        return [
            DistillRun(
                config=json.loads(config),
                status=status,
                checkpoint_path=checkpoint,
                evaluation=json.loads(evaluation),
                metrics=dict(metrics.get(id_, {})),
                uuid=uuid,
                created_at=created_at,
                finished_at=finished_at,
            )
            for id_, uuid, config, status, checkpoint, evaluation, created_at, finished_at in rows
        ]

    # -- integrity ----------------------------------------------------------------------------------

    @_translated
    def check(self) -> list[str]:
        """Verify the whole file; return the problems found (empty: the store is sound).

        SQLite's integrity and foreign-key checks, then the store's own invariants: the schema version,
        each episode's turn count, and every turn's stored prompt (valid JSON, a consistent prefix).
        """
        try:
            report = [line for (row,) in self._conn.execute("PRAGMA integrity_check(20)") for line in row.splitlines()]
        except sqlite3.DatabaseError as exc:
            if not isinstance(error := _translate(exc, self.path, self.timeout), StoreCorrupt):
                raise error from exc
            report = [str(exc)]
        if report != ["ok"]:  # the invariants below would read damaged pages
            return [f"integrity: {line}" for line in report if not line.startswith("*** in database")]
        problems: list[str] = []
        for table, rowid, parent, _ in self._conn.execute("PRAGMA foreign_key_check"):
            problems.append(f"foreign key: {table} row {rowid} points to a missing {parent} row")
        if (version := self._pragma("user_version")) != schema.SCHEMA_VERSION:
            problems.append(f"schema version {version}, expected {schema.SCHEMA_VERSION}")
        sql = (
            "SELECT e.uuid, e.num_turns, count(t.id) FROM episodes e LEFT JOIN turns t ON t.episode_id = e.id "
            "GROUP BY e.id HAVING e.num_turns != count(t.id)"
        )
        for uuid, expected, found in self._conn.execute(sql):
            problems.append(f"episode {uuid}: num_turns is {expected} but {found} turns are stored")
        previous_episode, previous_length = None, 0
        for episode_id, index, prefix, messages in self._conn.execute(
            "SELECT episode_id, idx, prompt_prefix, prompt_messages FROM turns ORDER BY episode_id, idx"
        ):
            if episode_id != previous_episode:
                previous_episode, previous_length = episode_id, 0
            try:
                new = json.loads(messages)
            except ValueError:
                problems.append(f"turn {index} of episode row {episode_id}: prompt messages are not valid JSON")
                continue
            if prefix > previous_length or not isinstance(new, list):
                problems.append(f"turn {index} of episode row {episode_id}: inconsistent stored prompt")
            previous_length = prefix + (len(new) if isinstance(new, list) else 0)
        return problems


def _revalidate(record: KnowledgeItem | KnowledgeSet | DistillRun) -> None:
    """Re-run a record's own checks (its fields may have changed since construction)."""
    try:
        record.__post_init__()
        if isinstance(record, KnowledgeSet):
            for item in record.items:
                item.__post_init__()
    except ValueError as exc:
        raise InvalidRecord(f"{type(record).__name__} {getattr(record, 'uuid', '?')}: {exc}") from None
