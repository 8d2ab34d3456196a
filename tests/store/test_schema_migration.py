"""Schema migrations: a store made by an older version opens, upgrades in place and keeps its records."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from experience_store import ExperienceStore, schema
from experience_store.records import KnowledgeItem


def test_a_version_1_store_upgrades_and_then_takes_exemplar_items(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for sql in schema.MIGRATIONS[0]:
        conn.execute(sql)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO knowledge_items (uuid, text, kind, env_id, model, round, metadata, created_at) "
                 "VALUES ('a' || hex(randomblob(15)), 'Carry the tens.', 'experience', 'addition', 'm', 0, '{}', 1.0)")
    conn.commit()
    conn.close()
    with ExperienceStore.open(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION >= 2
        store.add_knowledge_items([KnowledgeItem("Example. Problem: 2 + 2\nReply: 4", kind="exemplar", env_id="addition", model="m")])
        assert sorted(i.kind for i in store.knowledge_items(env="addition")) == ["exemplar", "experience"]
        assert store.check() == []
