"""Knowledge items and sets: stored with their sources and members, scored, one set selected per env."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from experience_store.errors import DuplicateRecord, InvalidRecord, KnowledgeSetNotFound
from experience_store.records import KnowledgeItem, KnowledgeKind, KnowledgeSet
from experience_store.store.connection import StoreConnection
from experience_store.store.sql import (
    children_by_position,
    chunks,
    is_finite,
    marks,
    revalidate,
    to_json,
    translated,
)

_ITEM_COLUMNS = "id, uuid, text, kind, env_id, model, round, metadata, created_at"
_SET_COLUMNS = (
    "id, uuid, env_id, round, token_count, validation_score, validation_n, selected, metadata, created_at"
)


class KnowledgeRecords(StoreConnection):
    """The knowledge item and set tables."""

    @translated
    def add_knowledge_items(self, items: Iterable[KnowledgeItem], *, skip_existing: bool = False) -> int:
        """Store knowledge items in one transaction; return how many were added (see ``add_episodes``)."""
        self._require_writable()
        batch = list(items)
        for item in batch:
            revalidate(item)
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
                metadata = to_json(item.metadata, f"knowledge item {item.uuid} metadata")
                cursor = self._conn.execute(
                    f"INSERT INTO knowledge_items ({_ITEM_COLUMNS}) VALUES (NULL, {marks(8)})",
                    (item.uuid, item.text, item.kind, item.env_id, item.model, int(item.round), metadata,
                     float(item.created_at)),
                )
                self._conn.executemany(
                    "INSERT INTO knowledge_item_sources (item_id, position, episode_uuid) VALUES (?, ?, ?)",
                    [(cursor.lastrowid, i, source) for i, source in enumerate(item.source_episodes)],
                )
                added += 1
        return added

    @translated
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
        sources = children_by_position(self._conn, "knowledge_item_sources", "item_id", "episode_uuid",
                                       [row[0] for row in rows])  # fmt: skip
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

    @translated
    def add_knowledge_set(self, knowledge_set: KnowledgeSet, *, skip_existing: bool = False) -> bool:
        """Store a knowledge set and any of its items not stored yet; return whether it was added.

        A set with ``selected=True`` becomes its env's selected set.
        """
        self._require_writable()
        revalidate(knowledge_set)
        ks = knowledge_set
        with self.transaction():
            if self._existing("knowledge_sets", [ks.uuid]):
                if skip_existing:
                    return False
                raise DuplicateRecord(f"{self.path}: knowledge set {ks.uuid} is already stored")
            self.add_knowledge_items(ks.items, skip_existing=True)
            item_ids = {}
            for chunk in chunks([item.uuid for item in ks.items]):
                sql = f"SELECT uuid, id FROM knowledge_items WHERE uuid IN ({marks(len(chunk))})"
                item_ids.update(self._conn.execute(sql, chunk).fetchall())
            score = None if ks.validation_score is None else float(ks.validation_score)
            n = None if ks.validation_n is None else int(ks.validation_n)
            metadata = to_json(ks.metadata, f"knowledge set {ks.uuid} metadata")
            cursor = self._conn.execute(
                f"INSERT INTO knowledge_sets ({_SET_COLUMNS}) VALUES (NULL, {marks(9)})",
                (ks.uuid, ks.env_id, int(ks.round), int(ks.token_count), score, n, 0, metadata, float(ks.created_at)),
            )
            self._conn.executemany(
                "INSERT INTO knowledge_set_items (set_id, position, item_id) VALUES (?, ?, ?)",
                [(cursor.lastrowid, i, item_ids[item.uuid]) for i, item in enumerate(ks.items)],
            )
            if ks.selected:
                self._select(cursor.lastrowid, ks.env_id)
        return True

    @translated
    def knowledge_sets(self, *, env: str | None = None) -> list[KnowledgeSet]:
        """Knowledge sets (of ``env``, or all), oldest first, each with its items in order."""
        if env is None:
            rows = self._conn.execute(f"SELECT {_SET_COLUMNS} FROM knowledge_sets ORDER BY created_at, id")
        else:
            sql = f"SELECT {_SET_COLUMNS} FROM knowledge_sets WHERE env_id = ? ORDER BY created_at, id"
            rows = self._conn.execute(sql, (env,))
        return self._load_sets(rows.fetchall())

    @translated
    def knowledge_set(self, set_id: str) -> KnowledgeSet:
        """The knowledge set with this uuid, or ``KnowledgeSetNotFound``."""
        row = self._conn.execute(f"SELECT {_SET_COLUMNS} FROM knowledge_sets WHERE uuid = ?", (set_id,)).fetchone()
        if row is None:
            raise KnowledgeSetNotFound(f"{self.path}: no knowledge set {set_id!r}")
        return self._load_sets([row])[0]

    @translated
    def selected_knowledge_set(self, env: str) -> KnowledgeSet | None:
        """The set selected for ``env``, or None if none was selected yet."""
        sql = f"SELECT {_SET_COLUMNS} FROM knowledge_sets WHERE env_id = ? AND selected = 1"
        row = self._conn.execute(sql, (env,)).fetchone()
        return None if row is None else self._load_sets([row])[0]

    def _load_sets(self, rows: list[tuple[Any, ...]]) -> list[KnowledgeSet]:
        set_ids = [row[0] for row in rows]
        members = children_by_position(self._conn, "knowledge_set_items", "set_id", "item_id", set_ids)
        item_ids = sorted({item_id for ids in members.values() for item_id in ids})
        items: dict[int, KnowledgeItem] = {}
        for chunk in chunks(item_ids):
            sql = f"SELECT {_ITEM_COLUMNS} FROM knowledge_items WHERE id IN ({marks(len(chunk))})"
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

    @translated
    def set_validation_score(self, set_id: str, score: float, n: int) -> None:
        """Record a set's validation score (e.g. a pass rate) measured over ``n`` episodes."""
        self._require_writable()
        if not is_finite(score) or not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            raise InvalidRecord(f"validation score must be a finite number over n > 0 episodes, got {score!r}, n={n!r}")
        with self.transaction():
            set_row = self._id("knowledge_sets", set_id, KnowledgeSetNotFound, "knowledge set")
            sql = "UPDATE knowledge_sets SET validation_score = ?, validation_n = ? WHERE id = ?"
            self._conn.execute(sql, (float(score), n, set_row))

    @translated
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
