"""Episodes record the env's constructor arguments; one store refuses to mix an env's settings silently."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from store_helpers import make_batch

from experience_store import ExperienceStore, MixedEnvSettings, schema
from experience_store.jsonl import export_jsonl, import_jsonl


def test_env_args_round_trip_and_mixing_is_refused_unless_allowed(tmp_path: Path) -> None:
    short = make_batch("short", 2, env_args={"max_turns": 2})
    with ExperienceStore.open(tmp_path / "exp.db") as store:
        store.add_episodes(short)
        assert [e.env_args for e in store.episodes()] == [{"max_turns": 2}] * 2
        store.add_episodes(make_batch("again", 1, env_args={"max_turns": 2}))
        store.check_env_args("opcd/Math-v0", {"max_turns": 2})
        with pytest.raises(MixedEnvSettings, match=r'env_args \{\}, but .*exp.db\'s opcd/Math-v0 episodes: env_args \{"max_turns": 2\}'):
            store.add_episodes(make_batch("default", 1, env_args={}))
        with pytest.raises(MixedEnvSettings, match="the episodes to play of env 'opcd/Math-v0'"):
            store.check_env_args("opcd/Math-v0", {"max_turns": 3})
        store.check_env_args("qa", {"anything": 1})  # no qa episodes stored
        mixed_batch = [*make_batch("b", 1, env="qa"), *make_batch("c", 1, env="qa", env_args={"n": 1})]
        with pytest.raises(MixedEnvSettings, match="of the same batch"):
            store.add_episodes(mixed_batch)
        assert store.count_episodes() == 3  # nothing of the refused batches was stored
        assert store.add_episodes(make_batch("default", 1, env_args={}), allow_mixed_settings=True) == 1
        assert sorted(json.dumps(e.env_args) for e in store.episodes()) == ['{"max_turns": 2}'] * 3 + ["{}"]


def test_jsonl_carries_env_args_and_old_files_without_them_import(tmp_path: Path) -> None:
    with ExperienceStore.open(tmp_path / "a.db") as store:
        store.add_episodes(make_batch("a", 2, env_args={"levels": [1, 2]}))
    export_jsonl(tmp_path / "a.db", tmp_path / "a.jsonl")
    import_jsonl(tmp_path / "a.jsonl", tmp_path / "b.db")
    with ExperienceStore.open(tmp_path / "b.db", readonly=True) as store:
        assert [e.env_args for e in store.episodes()] == [{"levels": [1, 2]}] * 2
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    for line in lines:
        del line["env_args"]  # a file written before env_args were recorded
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    import_jsonl(tmp_path / "old.jsonl", tmp_path / "c.db")
    with ExperienceStore.open(tmp_path / "c.db", readonly=True) as store:
        assert [e.env_args for e in store.episodes()] == [{}, {}]


def test_a_version_2_store_upgrades_and_its_episodes_hold_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with ExperienceStore.open(path) as store:
        store.add_episodes(make_batch("old", 2, env_args={}))
    conn = sqlite3.connect(path)  # back to version 2: drop what version 3 added
    conn.execute("DROP INDEX episodes_env_args")
    conn.execute("ALTER TABLE episodes DROP COLUMN env_args")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with ExperienceStore.open(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION == 3
        assert [e.env_args for e in store.episodes()] == [{}, {}]
        assert store.check() == []
        with pytest.raises(MixedEnvSettings):
            store.add_episodes(make_batch("new", 1, env_args={"max_turns": 2}))
