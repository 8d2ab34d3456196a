"""JSONL export / import and store merge: exact round trips, idempotence, all-or-nothing imports."""

from __future__ import annotations

import io
import json
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from store_helpers import digest, make_batch, make_episode

from experience_store import ExperienceStore, InvalidRecord, KnowledgeItem, KnowledgeSet, NotAStore, StoreError
from experience_store.__main__ import main
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
    assert check_jsonl(source, populated)["knowledge_set"] == 1
    with pytest.raises(InvalidRecord, match="unknown knowledge item"):
        check_jsonl(source)  # into a new store
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


def _episode(change: Callable[[dict], object]) -> dict:
    record = to_json(make_episode("bad", 0))
    change(record)
    return record


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# Lines import must refuse (json.dumps writes "\\ud800" as the JSON escape), with what the error says.
BAD_LINES = {
    "surrogate in an item's text": ({"type": "knowledge_item", "uuid": "k", "text": "a\ud800"}, "text is not valid"),
    "surrogate in an item's sources": (
        {"type": "knowledge_item", "uuid": "k", "text": "t", "source_episodes": ["\ud800"]},
        "source_episodes is not valid Unicode",
    ),
    "surrogate in a metadata key": (
        {"type": "knowledge_item", "uuid": "k", "text": "t", "metadata": {"\ud800": 1}},
        "metadata is not valid Unicode",
    ),
    "surrogate in a run config": ({"type": "run", "uuid": "r", "config": {"x": "\ud800"}}, "config is not valid"),
    "surrogate in a metric name": (
        {"type": "run", "uuid": "r", "config": {}, "metrics": {"\ud800": [[0, 1.0]]}},
        "metrics must map names (valid Unicode)",
    ),
    "surrogate in a set's env id": (
        {"type": "knowledge_set", "uuid": "s", "env_id": "\ud800", "token_count": 1, "items": []},
        "env_id is not valid Unicode",
    ),
    "surrogate in a reply": (
        _episode(lambda e: e["turns"][1].update(reply="\ud800")),
        "turns[1].reply is not valid Unicode",
    ),
    "surrogate in a prompt": (
        _episode(lambda e: e["turns"][0]["prompt_messages"][1].update(content="\udfff")),
        "turns[0].prompt_messages is not valid Unicode",
    ),
    "JSON 5,000 deep": ('{"type": "run", "uuid": "r", "config": ' + '{"a": ' * 5000 + "1" + "}" * 5001, "nested too"),
    "a config 101 levels deep": ({"type": "run", "uuid": "r", "config": _nested(101)}, "nested deeper than 100"),
    "NaN in an item's metadata": (
        '{"type": "knowledge_item", "uuid": "k", "text": "t", "metadata": {"x": NaN}}',
        "metadata is not JSON-serialisable",
    ),
    "NaN in an episode's metadata": (
        json.dumps(_episode(lambda e: e["metadata"].update(x=float("nan")))),
        "metadata is not JSON-serialisable",
    ),
    "infinity in an evaluation": (
        '{"type": "run", "uuid": "r", "config": {}, "evaluation": {"x": -Infinity}}',
        "evaluation is not JSON-serialisable",
    ),
    "a set naming an unknown item": (
        {"type": "knowledge_set", "uuid": "s", "env_id": "e", "token_count": 1, "items": ["ghost"]},
        "unknown knowledge item 'ghost'",
    ),
    "a metric logged twice at one step": (
        {"type": "run", "uuid": "r", "config": {}, "metrics": {"loss": [[0, 1.0], [0, 2.0]]}},
        "holds the same step twice",
    ),
}


@pytest.mark.parametrize(("bad", "message"), BAD_LINES.values(), ids=BAD_LINES.keys())
def test_check_only_rejects_exactly_what_import_rejects(
    populated: Path, tmp_path: Path, bad: dict | str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "in.jsonl", [to_json(make_episode("good", 0)), bad])
    before = digest(populated)
    new = tmp_path / "new.db"
    for store in (populated, new):
        with pytest.raises(InvalidRecord) as checked:
            check_jsonl(source, store)
        with pytest.raises(InvalidRecord) as imported:
            import_jsonl(source, store)
        assert str(checked.value) == str(imported.value)
        assert str(imported.value).startswith(f"{source}:2: ") and message in str(imported.value)
        verdicts = [main(["import", str(source), "--store", str(store), *flag]) for flag in (["--check-only"], [])]
        errors = capsys.readouterr().err.splitlines()
        assert verdicts == [1, 1] and errors == [f"error: {imported.value}"] * 2
    assert digest(populated) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("new.db")) == []


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A child's set-up: writing a file past ``limit`` bytes fails (EFBIG), as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("command", ["import", "merge"])
def test_a_failed_import_or_merge_leaves_no_new_store(tmp_path: Path, command: str) -> None:
    source = tmp_path / "source.db"
    with ExperienceStore.open(source) as store:
        store.add_episodes(make_batch("big", 1000, turns=5))  # about 2.4 MB
    dump = tmp_path / "dump.jsonl"
    export_jsonl(source, dump)
    new = tmp_path / "new.db"
    result = subprocess.run(
        [sys.executable, "-m", "experience_store", command, str(dump if command == "import" else source),
         "--store", str(new)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120,
        preexec_fn=_file_size_limit(256 * 1024),  # the new store's schema fits, its records do not
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith(f"error: {new}: "), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("new.db")) == []
