"""The whole-file check: SQLite's own, then the store's invariants."""

from __future__ import annotations

import json
import sqlite3

from experience_store import schema
from experience_store.errors import StoreCorrupt
from experience_store.store.connection import StoreConnection
from experience_store.store.sql import translate, translated


class IntegrityChecks(StoreConnection):
    """``check()``: what is wrong with the file, if anything."""

    @translated
    def check(self) -> list[str]:
        """Verify the whole file; return the problems found (empty: the store is sound).

        SQLite's integrity and foreign-key checks, then the store's own invariants: the schema version,
        each episode's turn count, and every turn's stored prompt (valid JSON, a consistent prefix).
        """
        try:
            report = [line for (row,) in self._conn.execute("PRAGMA integrity_check(20)") for line in row.splitlines()]
        except sqlite3.DatabaseError as exc:
            if not isinstance(error := translate(exc, self.path, self.timeout), StoreCorrupt):
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
