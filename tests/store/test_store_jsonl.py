"""JSONL export / import and store merge: exact round trips, idempotence, all-or-nothing imports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from store_helpers import digest, make_batch, make_episode

from experience_store import ExperienceStore, InvalidRecord, KnowledgeItem, KnowledgeSet, NotAStore, StoreError
from experience_store.jsonl import (
    RECORD_TYPES,
    check_jsonl,
    export_jsonl,
    from_json,
    import_jsonl,
    merge_stores,
    to_json,
)


def _everything(path: Path) -> tuple[list, list, list, list]:
    with ExperienceStore.open(path, readonly=True) as store:
        return list(store.episodes()), store.knowledge_items(), store.knowledge_sets(), store.runs()


def test_export_import_round_trip(populated: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump.jsonl"
    counts = export_jsonl(populated, out)
    assert counts == {"episode": 23, "knowledge_item": 2, "knowledge_set": 1, "run": 1}
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 27 and all(json.loads(line)["type"] in RECORD_TYPES for line in lines)
    assert [name for name in tmp_path.iterdir() if name.name.endswith(".tmp")] == []

    copy = tmp_path / "copy.db"
    result = import_jsonl(out, copy)
    assert result.added == counts and sum(result.skipped.values()) == 0
    assert _everything(copy) == _everything(populated)
    again = import_jsonl(out, copy)  # idempotent
    assert sum(again.added.values()) == 0 and again.skipped == counts
    assert _everything(copy) == _everything(populated)


def test_records_convert_to_json_and_back(populated: Path) -> None:
    episodes, items, sets, runs = _everything(populated)
    for record in (episodes[0], items[0], runs[0]):
        assert from_json(json.loads(json.dumps(to_json(record)))) == (record, [])
    knowledge_set, item_uuids = from_json(to_json(sets[0]))
    assert item_uuids == [item.uuid for item in sets[0].items] and knowledge_set.items == []


def test_export_to_a_stream(populated: Path) -> None:
    buffer = io.StringIO()
    export_jsonl(populated, buffer)
    assert buffer.getvalue().count("\n") == 27


def _write(path: Path, records: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "must be a JSON object"),
        ({"type": "potato", "uuid": "x"}, "unknown record type 'potato'"),
        ({"type": "episode", "env_id": "e"}, "missing field 'uuid'"),
        ({"type": "episode", "uuid": "u1", "env_id": "e", "task_id": "t", "split": "s"}, "missing field 'model'"),
        ({"type": "knowledge_item", "uuid": "k", "text": "t", "colour": "red"}, "unknown field 'colour'"),
        ({"type": "knowledge_item", "uuid": "k", "text": "t", "kind": "wisdom"}, "kind must be one of"),
        ({"type": "run", "uuid": "r", "config": {}, "metrics": {"loss": [[0, "high"]]}}, "value must be a number"),
        ({"type": "knowledge_set", "uuid": "s", "env_id": "e", "token_count": 1, "items": ["ghost"]}, "item 'ghost'"),
    ],
)
def test_a_bad_line_is_reported_with_its_number_and_nothing_is_imported(
    populated: Path, tmp_path: Path, bad: dict | str, message: str
) -> None:
    good = [to_json(e) for e in make_batch("import", 3)]
    source = _write(tmp_path / "in.jsonl", [*good[:2], bad, good[2]])
    before = digest(populated)
    with pytest.raises(InvalidRecord, match=message) as error:
        import_jsonl(source, populated)
    assert error.value.line == 3 and str(error.value).startswith(f"{source}:3: ")
    assert digest(populated) == before
    fresh = tmp_path / "fresh.db"
    with pytest.raises(InvalidRecord):
        import_jsonl(source, fresh)
    assert not fresh.exists()  # a bad file does not even create the store


def test_a_bad_episode_line_names_the_field(tmp_path: Path) -> None:
    record = to_json(make_episode("x", 1))
    record["turns"][1]["reward"] = "lots"
    source = _write(tmp_path / "in.jsonl", [record])
    with pytest.raises(InvalidRecord, match=r":1: episode '.*': turns\[1\]\.reward must be a finite number"):
        check_jsonl(source)
    (tmp_path / "bin.jsonl").write_bytes(b'{"type": "run", "uuid": "r", "config": {}}\n\xff\xfe\n')
    with pytest.raises(InvalidRecord, match=":2: not UTF-8"):
        check_jsonl(tmp_path / "bin.jsonl")


def test_sets_may_refer_to_items_already_in_the_store(populated: Path, tmp_path: Path) -> None:
    _, items, _, _ = _everything(populated)
    new_set = KnowledgeSet("opcd/Math-v0", [items[1]], token_count=6, selected=True)
    source = _write(tmp_path / "in.jsonl", [to_json(new_set)])
    assert import_jsonl(source, populated).added["knowledge_set"] == 1
    with ExperienceStore.open(populated, readonly=True) as store:
        assert store.knowledge_set(new_set.uuid).items == [items[1]]
        selected = store.selected_knowledge_set("opcd/Math-v0")
        assert selected is not None and selected.uuid != new_set.uuid  # the store's own selection is kept


def _worker_store(path: Path, tag: str, shared: list) -> Path:
    with ExperienceStore.open(path) as store:
        store.add_episodes(make_batch(tag, 10) + shared)
        item = KnowledgeItem(f"rule from {tag}", env_id="opcd/Math-v0")
        store.add_knowledge_set(KnowledgeSet("opcd/Math-v0", [item], token_count=4, selected=True))
        run_id = store.create_run({"worker": tag})
        store.log_run_metrics(run_id, 1, {"loss": 0.5})
    return path


def test_merge_combines_worker_stores_by_uuid_and_is_idempotent(tmp_path: Path) -> None:
    shared = make_batch("both", 4)  # e.g. a retried task recorded on two machines
    sources = [_worker_store(tmp_path / f"worker{w}.db", f"w{w}", shared) for w in range(3)]
    target = tmp_path / "all.db"
    counts = merge_stores(target, sources)
    assert counts.added == {"episode": 34, "knowledge_item": 3, "knowledge_set": 3, "run": 3}
    assert counts.skipped["episode"] == 8
    again = merge_stores(target, sources)
    assert sum(again.added.values()) == 0
    with ExperienceStore.open(target, readonly=True) as store:
        assert store.count_episodes() == 34
        assert [s.selected for s in store.knowledge_sets()] == [True, False, False]  # one selected per env
        assert {r.config["worker"] for r in store.runs()} == {"w0", "w1", "w2"}
        assert all(r.metrics == {"loss": [(1, 0.5)]} for r in store.runs())
        assert store.check() == []


def test_merge_refuses_bad_sources_before_touching_the_target(populated: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    before = digest(populated)
    with pytest.raises(NotAStore):
        merge_stores(populated, [junk])
    with pytest.raises(StoreError, match="target store itself"):
        merge_stores(populated, [populated])
    assert digest(populated) == before
    with pytest.raises(NotAStore):
        merge_stores(tmp_path / "new.db", [junk])
    assert not (tmp_path / "new.db").exists()


def test_export_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    out = tmp_path / "dump.jsonl"
    out.write_text("previous export\n")
    with pytest.raises(NotAStore):
        export_jsonl(tmp_path / "missing.db", out)
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.jsonl"]
