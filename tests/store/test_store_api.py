"""The store's Python API on real store files: round trips, filters, validation, knowledge, runs, schema."""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
import types
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from store_helpers import digest, make_batch, make_episode

from agents.records import Episode, Turn
from experience_store import (
    DistillRun,
    DuplicateRecord,
    EpisodeNotFound,
    ExperienceStore,
    InvalidRecord,
    KnowledgeItem,
    KnowledgeSet,
    KnowledgeSetNotFound,
    NotAStore,
    RunNotFound,
    StoreError,
    StoreReadOnly,
    StoreTooNew,
    schema,
)
from experience_store.jsonl import export_jsonl, import_jsonl


def test_episodes_round_trip_exactly(store_path: Path) -> None:
    batch = make_batch("rt", 20) + [make_episode("empty", 0, turns=0, created_at=1_800_000_000.0)]
    with ExperienceStore.open(store_path) as store:
        assert store.add_episodes(batch) == len(batch)
    with ExperienceStore.open(store_path, readonly=True) as store:
        assert list(store.episodes()) == batch
        assert store.episode(batch[3].uuid) == batch[3]


def test_the_store_knows_every_field_of_the_episode_record() -> None:
    # A field added to agents.records must be persisted (a schema migration, the store's row mapping, the
    # JSONL docs, store_helpers.make_episode giving it a value) before it is added to these lists.
    assert [f.name for f in dataclasses.fields(Episode)] == [
        "env_id", "task_id", "split", "model", "turns", "success", "total_reward", "context_id", "round", "seed",
        "wall_time_s", "metadata", "env_args", "uuid", "created_at",
    ]  # fmt: skip
    assert [f.name for f in dataclasses.fields(Turn)] == [
        "index", "prompt_messages", "reply", "action", "reward", "observation", "prompt_tokens",
        "completion_tokens", "reply_token_ids",
    ]  # fmt: skip


def test_prompts_are_stored_incrementally_and_rebuilt(store_path: Path) -> None:
    episode = make_episode("long", 1, turns=12)
    with ExperienceStore.open(store_path) as store:
        store.add_episodes([episode])
    conn = sqlite3.connect(store_path)
    stored = conn.execute("SELECT prompt_prefix, prompt_messages FROM turns ORDER BY idx").fetchall()
    conn.close()
    assert stored[0][0] == 0
    assert all(prefix == 2 * k for k, (prefix, _) in enumerate(stored[1:], 1))  # only the new messages are kept
    with ExperienceStore.open(store_path) as store:
        assert store.episode(episode.uuid).turns == episode.turns


messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=20)}),
    max_size=5,
)


@given(prompts=st.lists(messages, max_size=6), reuse=st.lists(st.integers(0, 6), max_size=6))
def test_any_prompt_sequence_round_trips(tmp_path_factory: pytest.TempPathFactory, prompts, reuse) -> None:
    # Prompts that share prefixes with the previous one, partly or not at all (a windowed history).
    for k in range(1, len(prompts)):
        if k - 1 < len(reuse):
            prompts[k] = prompts[k - 1][: reuse[k - 1]] + prompts[k]
    turns = [Turn(k, p, f"reply {k}", "a", 0.5 * k, "obs \x00 ünï", k, 1) for k, p in enumerate(prompts)]
    episode = Episode("env", "task", "train", "model", turns, metadata={"nested": {"x": [1.5, None]}})
    with ExperienceStore.open(tmp_path_factory.mktemp("prop") / "p.db") as store:
        store.add_episodes([episode])
        assert store.episode(episode.uuid) == episode
        assert store.check() == []


def test_filters_match_a_plain_python_filter(populated: Path) -> None:
    with ExperienceStore.open(populated, readonly=True) as store:
        everything = list(store.episodes())
        cases = [
            {"env": "opcd/Math-v0"},
            {"env": "opcd/Math-v0", "split": "validation"},
            {"success": True},
            {"success": False, "model": "tiny-model"},
            {"round": 1},
            {"env": "opcd/FrozenLake-v0", "success": True, "split": "train"},
            {"since": 1_700_000_003.0, "until": 1_700_000_005.0},
            {"since": datetime.fromtimestamp(1_700_000_010.0, tz=timezone.utc)},
        ]
        for filters in cases:
            expected = [e for e in everything if _matches(e, **filters)]
            assert list(store.episodes(**filters)) == expected, filters
            assert store.count_episodes(**filters) == len(expected)
        math_episodes = [e for e in everything if e.env_id == "opcd/Math-v0"]
        assert list(store.episodes(env="opcd/Math-v0", limit=4)) == math_episodes[:4]
        assert [e.created_at for e in everything] == sorted(e.created_at for e in everything)  # oldest first
        assert list(store.episodes(env="nope")) == []


def _matches(e: Episode, env=None, split=None, success=None, model=None, round=None, since=None, until=None) -> bool:
    since = since.timestamp() if isinstance(since, datetime) else since
    return (
        (env is None or e.env_id == env)
        and (split is None or e.split == split)
        and (success is None or e.success == success)
        and (model is None or e.model == model)
        and (round is None or e.round == round)
        and (since is None or e.created_at >= since)
        and (until is None or e.created_at < until)
    )


def test_episodes_are_read_lazily_in_pages(store_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        store.add_episodes(make_batch("many", 600, turns=1))
        iterator = store.episodes()
        assert isinstance(iterator, types.GeneratorType)
        first = next(iterator)
        assert first.uuid == make_episode("many", 0, turns=1).uuid
        store.add_episodes(make_batch("later", 3, turns=1, created_at=1_800_000_000.0))  # writing mid-iteration
        assert sum(1 for _ in iterator) == 600 - 1 + 3  # is fine, and newer episodes show up


def test_paging_through_episodes_with_equal_timestamps(store_path: Path) -> None:
    batch = [dataclasses.replace(e, created_at=1.0) for e in make_batch("tie", 600, turns=1)]
    with ExperienceStore.open(store_path) as store:
        store.add_episodes(batch)
        assert [e.uuid for e in store.episodes()] == [e.uuid for e in batch]  # ties: in arrival order
        assert [e.uuid for e in store.episodes(limit=300)] == [e.uuid for e in batch[:300]]


def test_episode_lookup_by_prefix_and_not_found(populated: Path) -> None:
    with ExperienceStore.open(populated, readonly=True) as store:
        episode = next(store.episodes())
        assert store.episode(episode.uuid[:10]) == episode
        with pytest.raises(EpisodeNotFound, match="no episode 'zzz'"):
            store.episode("zzz")
        with pytest.raises(KeyError):
            store.episode("")
        with pytest.raises(EpisodeNotFound, match="ambiguous"):
            store.episode(_common_prefix(store))


def _common_prefix(store: ExperienceStore) -> str:
    """A first character that several uuids share (23 hex uuids: at least two share one)."""
    uuids = sorted(e.uuid for e in store.episodes())
    return next(a[0] for a, b in zip(uuids, uuids[1:]) if a[0] == b[0])


def test_a_batch_is_all_or_nothing(store_path: Path) -> None:
    good = make_batch("ok", 5)
    bad = make_episode("bad", 0)
    bad.turns[1].reward = math.nan
    with ExperienceStore.open(store_path) as store:
        with pytest.raises(InvalidRecord, match=r"turns\[1\]\.reward must be a finite number"):
            store.add_episodes([*good, bad])
        assert store.count_episodes() == 0
        unserialisable = make_episode("meta", 0)
        unserialisable.metadata = {"when": datetime.now()}
        with pytest.raises(InvalidRecord, match="metadata is not JSON-serialisable"):
            store.add_episodes([*good, unserialisable])
        assert store.add_episodes(good) == 5
        with pytest.raises(DuplicateRecord, match="already stored"):
            store.add_episodes([make_episode("new", 0), good[2]])
        with pytest.raises(DuplicateRecord, match="twice"):
            store.add_episodes([make_episode("new", 0), make_episode("new", 0)])
        assert store.count_episodes() == 5
        assert store.add_episodes([make_episode("new", 0), good[2]], skip_existing=True) == 1
        assert store.count_episodes() == 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: setattr(e, "success", "yes"), "success must be true or false"),
        (lambda e: setattr(e, "round", 1.5), "round must be a 64-bit integer"),
        (lambda e: setattr(e, "env_id", None), "env_id must be a string"),
        (lambda e: e.turns[0].prompt_messages.append({"role": "user"}), r"turns\[0\]\.prompt_messages must be"),
        (lambda e: setattr(e.turns[1], "reply_token_ids", [1, -2]), r"turns\[1\]\.reply_token_ids must be"),
        (lambda e: setattr(e.turns[2], "index", 0), r"turns\[2\]\.index must increase"),
        (lambda e: setattr(e, "created_at", math.inf), "created_at must be a finite number"),
        (lambda e: setattr(e.turns[0], "reply", "\ud800"), "not valid Unicode"),
    ],
)
def test_invalid_episodes_are_refused_with_the_field_named(store_path: Path, change, message: str) -> None:
    episode = make_episode("invalid", 0)
    change(episode)
    with ExperienceStore.open(store_path) as store:
        with pytest.raises(InvalidRecord, match=message):
            store.add_episodes([episode])
        assert store.count_episodes() == 0


def test_episodes_are_append_only_in_the_database_itself(populated: Path) -> None:
    conn = sqlite3.connect(populated)
    for table in ("episodes", "turns"):
        for sql in (f"UPDATE {table} SET id = id + 1000", f"DELETE FROM {table}"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    conn.close()


def test_transaction_groups_writes_and_rolls_back_on_error(store_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.add_episodes(make_batch("a", 3))
                store.create_run({"x": 1})
                raise RuntimeError("boom")
        assert store.count_episodes() == 0 and store.runs() == []
        with store.transaction():
            store.add_episodes(make_batch("a", 3))
            with pytest.raises(DuplicateRecord):
                store.add_episodes(make_batch("b", 2) + make_batch("a", 1))  # a savepoint: undone alone
            run_id = store.create_run({"x": 1})
        assert store.count_episodes() == 3 and store.run(run_id).config == {"x": 1}


def test_knowledge_items_sets_and_selection(store_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        a = KnowledgeItem("Look before you leap.", env_id="grid", model="m", round=1, source_episodes=["e1", "e2"])
        b = KnowledgeItem("Be concise.", kind="system_prompt", model="m")
        assert store.add_knowledge_items([a, b]) == 2
        assert store.knowledge_items() == [a, b]
        assert store.knowledge_items(env="grid") == [a]
        assert store.knowledge_items(kind="system_prompt") == [b]
        assert store.knowledge_items(round=1, model="m") == [a]
        c = KnowledgeItem("Avoid holes.", env_id="grid")
        first = KnowledgeSet("grid", [c, a], token_count=9)  # c is stored along with the set
        second = KnowledgeSet("grid", [a], token_count=5, round=1)
        other = KnowledgeSet("math", [b], token_count=3, selected=True)
        for knowledge_set in (first, second, other):
            assert store.add_knowledge_set(knowledge_set)
        assert store.add_knowledge_set(first, skip_existing=True) is False
        assert len(store.knowledge_items()) == 3
        assert store.knowledge_sets(env="grid") == [first, second]
        assert store.knowledge_set(first.uuid).items == [c, a]  # order kept
        assert store.selected_knowledge_set("grid") is None
        assert store.selected_knowledge_set("math") == other

        store.set_validation_score(first.uuid, 0.62, 50)
        store.select_knowledge_set(first.uuid)
        store.select_knowledge_set(second.uuid)
        selected = store.selected_knowledge_set("grid")
        assert selected is not None and selected.uuid == second.uuid
        assert [s.selected for s in store.knowledge_sets(env="grid")] == [False, True]  # exactly one per env
        assert store.selected_knowledge_set("math") == other
        scored = store.knowledge_set(first.uuid)
        assert (scored.validation_score, scored.validation_n) == (0.62, 50)

        with pytest.raises(KnowledgeSetNotFound):
            store.select_knowledge_set("missing")
        with pytest.raises(InvalidRecord):
            store.set_validation_score(first.uuid, math.nan, 10)
        with pytest.raises(ValueError, match="kind must be one of"):
            KnowledgeItem("x", kind="wisdom")  # type: ignore[arg-type]


def test_runs_record_config_metrics_and_outcome(store_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        run_id = store.create_run({"lr": 2e-5, "loss": "reverse_kl_topk"})
        store.log_run_metrics(run_id, 0, {"losses/kl": 1.5, "charts/lr": 2e-5})
        store.log_run_metrics(run_id, 10, {"losses/kl": 0.7})
        store.log_run_metrics(run_id, 10, {"losses/kl": 0.6})  # re-logged (e.g. after a resume): replaced
        running = store.run(run_id)
        assert running.status == "running" and running.finished_at is None
        store.finish_run(run_id, "completed", Path("ckpt/final"), {"pass_rate": {"with_context": 0.7}})
        run = store.run(run_id)
        assert run.metrics == {"charts/lr": [(0, 2e-5)], "losses/kl": [(0, 1.5), (10, 0.6)]}
        assert (run.status, run.checkpoint_path) == ("completed", "ckpt/final")
        assert run.evaluation == {"pass_rate": {"with_context": 0.7}}
        assert run.finished_at is not None
        assert store.runs(status="completed") == [run] and store.runs(status="failed") == []
        with pytest.raises(RunNotFound):
            store.log_run_metrics("nope", 1, {"x": 1.0})
        with pytest.raises(InvalidRecord, match="finishes as one of"):
            store.finish_run(run_id, "running")
        with pytest.raises(InvalidRecord, match="must be a number"):
            store.log_run_metrics(run_id, 1, {"x": "high"})  # type: ignore[dict-item]
        copied = dataclasses.replace(run, uuid="copy")
        assert store.add_run(copied) and store.run("copy") == copied


def test_a_diverging_run_keeps_its_nan_and_infinite_metrics(store_path: Path, tmp_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        run_id = store.create_run({})
        store.log_run_metrics(run_id, 1, {"loss": 0.5, "grad_norm": math.inf})
        store.log_run_metrics(run_id, 2, {"loss": math.nan, "grad_norm": -math.inf})
    export_jsonl(store_path, tmp_path / "runs.jsonl")
    assert '"NaN"' in (tmp_path / "runs.jsonl").read_text()
    import_jsonl(tmp_path / "runs.jsonl", tmp_path / "copy.db")
    for path in (store_path, tmp_path / "copy.db"):
        with ExperienceStore.open(path, readonly=True) as store:
            metrics = store.run(run_id).metrics
        assert metrics["grad_norm"] == [(1, math.inf), (2, -math.inf)]
        assert metrics["loss"][0] == (1, 0.5) and math.isnan(metrics["loss"][1][1])


def test_stats(populated: Path) -> None:
    with ExperienceStore.open(populated, readonly=True) as store:
        stats = store.stats()
    assert (stats.episodes, stats.turns) == (23, 12 * 3 + 6 * 3 + 5 * 5)
    assert (stats.knowledge_items, stats.knowledge_sets, stats.runs) == (2, 1, 1)
    assert stats.schema_version == schema.SCHEMA_VERSION and stats.file_bytes > 0
    groups = {(g.env_id, g.split, g.model): g for g in stats.groups}
    math_train = groups["opcd/Math-v0", "train", "tiny-model"]
    assert (math_train.episodes, math_train.successes, math_train.mean_turns) == (12, 4, 3.0)
    assert math_train.success_rate == pytest.approx(4 / 12)


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KnowledgeItem("a\ud800"), "text is not valid Unicode"),
        (lambda: KnowledgeItem("t", source_episodes=["\udfff"]), "source_episodes is not valid Unicode"),
        (lambda: KnowledgeItem("t", metadata={"x": math.nan}), "metadata is not JSON-serialisable"),
        (lambda: KnowledgeItem("t", metadata=_nested(101)), "metadata is nested deeper than 100 levels"),
        (lambda: KnowledgeSet("\ud800", [], token_count=1), "env_id is not valid Unicode"),
        (lambda: DistillRun({"x": "\ud800"}), "config is not valid Unicode"),
        (lambda: DistillRun(_nested(5000)), "config is nested deeper than 100 levels"),
        (lambda: DistillRun({}, evaluation={"x": math.inf}), "evaluation is not JSON-serialisable"),
        (lambda: DistillRun({}, metrics={"\ud800": [(0, 1.0)]}), "names (valid Unicode)"),
        (lambda: DistillRun({}, metrics={"loss": [(1, 1.0), (1, 0.5)]}), "holds the same step twice"),
    ],
)
def test_records_refuse_what_the_store_cannot_keep(make, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_store_methods_refuse_text_that_is_not_unicode(store_path: Path) -> None:
    deep = KnowledgeItem("t", metadata=_nested(100))
    with ExperienceStore.open(store_path) as store:
        store.add_knowledge_items([deep])
        assert store.knowledge_items() == [deep]  # 100 levels are fine
        with pytest.raises(InvalidRecord, match="config is not JSON-serialisable"):
            store.create_run({"lr": math.nan})
        run_id = store.create_run({})
        with pytest.raises(InvalidRecord, match="metric name '\\\\ud800'"):
            store.log_run_metrics(run_id, 0, {"\ud800": 1.0})
        with pytest.raises(InvalidRecord, match="64-bit"):
            store.log_run_metrics(run_id, 2**64, {"loss": 1.0})
        with pytest.raises(InvalidRecord, match="evaluation is not valid Unicode"):
            store.finish_run(run_id, "completed", evaluation={"x": "\ud800"})
        for lookup in (lambda: list(store.episodes(env="\udcff")), lambda: store.episode("\udcff")):
            with pytest.raises(StoreError, match="is not valid Unicode"):
                lookup()
        assert store.run(run_id).status == "running" and store.check() == []


def test_read_only_store_refuses_writes_and_missing_files(populated: Path, tmp_path: Path) -> None:
    with ExperienceStore.open(populated, readonly=True) as store:
        with pytest.raises(StoreReadOnly):
            store.add_episodes(make_batch("x", 1))
        with pytest.raises(StoreReadOnly):
            store.create_run({})
    missing = tmp_path / "missing.db"
    with pytest.raises(NotAStore, match="no such store"):
        ExperienceStore.open(missing, readonly=True)
    assert not missing.exists()
    with pytest.raises(NotAStore, match="does not exist"):
        ExperienceStore.open(tmp_path / "no" / "such" / "dir.db")


def test_new_store_is_stamped_with_schema_version_and_application_id(store_path: Path) -> None:
    ExperienceStore.open(store_path).close()
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_empty_files_become_stores_foreign_databases_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    ExperienceStore.open(empty).close()
    sqlite3.connect(tmp_path / "blank.db").close()  # a zero-byte SQLite database
    ExperienceStore.open(tmp_path / "blank.db").close()
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    before = digest(foreign)
    with pytest.raises(NotAStore, match="not an experience store"):
        ExperienceStore.open(foreign)
    assert digest(foreign) == before


def test_a_store_from_a_newer_version_is_refused_untouched(populated: Path) -> None:
    conn = sqlite3.connect(populated)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(populated)
    for readonly in (False, True):
        with pytest.raises(StoreTooNew, match=f"schema version {schema.SCHEMA_VERSION + 1}, newer"):
            ExperienceStore.open(populated, readonly=readonly)
    assert digest(populated) == before


def test_forward_migration_upgrades_in_place_and_old_code_then_refuses(
    populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ExperienceStore.open(populated, readonly=True) as store:
        episodes = list(store.episodes())
    v2 = ("CREATE TABLE annotations (episode_id INTEGER REFERENCES episodes (id), note TEXT)",)
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, v2))
        patch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
        with pytest.raises(StoreError, match="open it read-write once"):
            ExperienceStore.open(populated, readonly=True)
        with ExperienceStore.open(populated) as store:
            assert store.schema_version == schema.SCHEMA_VERSION
            assert list(store.episodes()) == episodes
            assert store.check() == []
    with pytest.raises(StoreTooNew):
        ExperienceStore.open(populated)
