"""``python -m experience_store`` in a subprocess: every command, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import digest, make_batch

from experience_store import ExperienceStore, schema
from experience_store.__main__ import main
from experience_store.jsonl import export_jsonl, to_json

REPO = Path(__file__).resolve().parents[2]


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experience_store", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # wide tables: assertions look for whole cell values
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_reading_commands(populated: Path) -> None:
    stats = cli("stats", "--store", populated)
    assert stats.returncode == 0, stats.stderr
    assert "opcd/FrozenLake-v0" in stats.stdout and "23" in stats.stdout

    listed = cli("episodes", "--store", populated, "--env", "opcd/Math-v0", "--split", "validation", "--success")
    assert listed.returncode == 0 and "Episodes (2 of 2)" in listed.stdout
    assert "Episodes (3 of 23)" in cli("episodes", "--store", populated, "--limit", "3").stdout
    assert "(0 of 0)" in cli("episodes", "--store", populated, "--since", "2030-01-01").stdout

    with ExperienceStore.open(populated, readonly=True) as store:
        episode = next(store.episodes(env="opcd/FrozenLake-v0"))
    shown = cli("show", episode.uuid[:12], "--store", populated)
    assert shown.returncode == 0, shown.stderr
    assert episode.uuid in shown.stdout and "turn 4" in shown.stdout
    assert shown.stdout.count("[system]") == 1  # the system prompt is not repeated per turn
    full = cli("show", episode.uuid, "--store", populated, "--full")
    assert full.stdout.count("[system]") == 5

    knowledge = cli("knowledge", "--store", populated)
    assert knowledge.returncode == 0 and "Check the arithmetic first." in knowledge.stdout
    runs = cli("runs", "--store", populated)
    assert runs.returncode == 0 and "completed" in runs.stdout and "ckpt/step-10" in runs.stdout
    check = cli("check", "--store", populated)
    assert check.returncode == 0 and "ok" in check.stdout


def test_export_import_merge(populated: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    exported = cli("export", "--store", populated, "--out", dump)
    assert exported.returncode == 0, exported.stderr
    assert len(dump.read_text().splitlines()) == 27
    streamed = cli("export", "--store", populated, "--out", "-")
    assert streamed.stdout == dump.read_text()

    copy = tmp_path / "copy.db"
    assert cli("import", dump, "--store", copy, "--check-only").returncode == 0
    assert not copy.exists()
    imported = cli("import", dump, "--store", copy)
    assert imported.returncode == 0 and "23" in imported.stdout
    merged = tmp_path / "merged.db"
    assert cli("merge", populated, copy, "--store", merged).returncode == 0
    with ExperienceStore.open(merged, readonly=True) as store:
        assert store.count_episodes() == 23


def test_malformed_jsonl_names_the_line_and_imports_nothing(populated: Path, tmp_path: Path) -> None:
    lines = [json.dumps(to_json(e)) for e in make_batch("cli", 4)]
    lines[2] = lines[2][:-10]  # a line cut short
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(lines) + "\n")
    before = digest(populated)
    assert_one_line_error(cli("import", source, "--store", populated), f"{source}:3:", "not valid JSON")
    assert digest(populated) == before


@pytest.mark.parametrize("command", ["stats", "episodes", "check", "export"])
def test_not_a_store(tmp_path: Path, command: str) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    extra = ["--out", tmp_path / "out.jsonl"] if command == "export" else []
    assert_one_line_error(cli(command, "--store", notes, *extra), "not an experience store")
    assert notes.read_text() == "not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_bad_files_and_ids(populated: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    assert_one_line_error(cli("stats", "--store", missing), "no such store")
    assert not missing.exists()
    assert_one_line_error(cli("show", "feedface", "--store", populated), "no episode 'feedface'")
    assert_one_line_error(cli("import", tmp_path / "nope.jsonl", "--store", populated), "nope.jsonl cannot be read")

    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(populated.read_bytes()[: populated.stat().st_size // 2])
    assert_one_line_error(cli("check", "--store", truncated), "truncated")

    newer = tmp_path / "newer.db"
    newer.write_bytes(populated.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 7}")
    conn.close()
    before = digest(newer)
    assert_one_line_error(cli("merge", populated, "--store", newer), "newer than this tool")
    assert digest(newer) == before


def test_corrupt_store(store_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        for b in range(3):
            store.add_episodes(make_batch(f"c{b}", 100, turns=5))
    size = store_path.stat().st_size
    with store_path.open("r+b") as file:
        file.seek(size // 2)
        file.write(b"\xa5" * 4096 * 8)
    before = digest(store_path)
    check = cli("check", "--store", store_path)
    assert_one_line_error(check, "problem(s) found", "integrity")
    assert_one_line_error(cli("export", "--store", store_path, "--out", "-"), "is corrupt")
    assert digest(store_path) == before


def test_locked_store(populated: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(to_json(make_batch("locked", 1)[0])) + "\n")
    holder = sqlite3.connect(populated, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = cli("import", source, "--store", populated, "--timeout", "0.3")
        assert_one_line_error(result, "is locked", "0.3 s")
        assert cli("stats", "--store", populated).returncode == 0  # readers still read
    finally:
        holder.close()


@pytest.mark.parametrize(
    "args",
    [
        ["episodes", "--limit", "-1"],
        ["episodes", "--limit", "0"],
        ["episodes", "--limit", "ten"],
        ["episodes", "--round", "-1"],
        ["episodes", "--round", str(2**64)],
        ["episodes", "--since", "nan"],
        ["stats", "--timeout", "-1"],
        ["stats", "--timeout", "nan"],
        ["stats", "--timeout", "inf"],
        ["reflect", "--env", "math", "--extract-temperature", "inf"],
        ["reflect", "--env", "math", "--alpha", "0"],
        ["reflect", "--env", "math", "--similarity", "nan"],
        ["reflect", "--env", "math", "--seed", "-1"],
        ["reflect", "--env", "math", "--extract-max-new-tokens", str(2**40)],
    ],
)
def test_numeric_flags_are_checked_for_range_and_finiteness(
    populated: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = digest(populated)
    with pytest.raises(SystemExit) as exited:
        main([*args, "--store", str(populated)])
    assert exited.value.code == 2
    assert f"error: argument {args[-2]}: " in capsys.readouterr().err.splitlines()[-1]
    assert digest(populated) == before


@pytest.mark.parametrize(
    "command",
    [
        ["stats"], ["episodes"], ["show", "abc"], ["knowledge"], ["runs"], ["check"], ["export", "--out", "-"],
        ["import", "DUMP"], ["import", "DUMP", "--check-only"], ["merge", "SOURCE"], ["reflect", "--env", "math"],
    ],
)  # fmt: skip
def test_a_directory_given_as_the_store_is_not_a_file(
    populated: Path, tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "somedir.db"
    folder.mkdir()
    dump = tmp_path / "dump.jsonl"
    export_jsonl(populated, dump)
    args = [str({"DUMP": dump, "SOURCE": populated}.get(arg, arg)) for arg in command]
    assert main([*args, "--store", str(folder)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {folder} is a directory, not a file"]
    assert list(folder.iterdir()) == []


UNDECODABLE = "\udcff"  # what Python makes of a command-line byte that is not UTF-8 ($'\\xff')


@pytest.mark.parametrize(
    "args", [["episodes", "--env", UNDECODABLE], ["show", UNDECODABLE], ["knowledge", "--env", UNDECODABLE]]
)
def test_arguments_that_are_not_unicode_are_an_error(
    populated: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--store", str(populated)]) == 1
    error = capsys.readouterr().err.splitlines()
    assert len(error) == 1 and "'\\udcff' is not valid Unicode" in error[0]


def test_show_elides_long_texts_unless_full(store_path: Path) -> None:
    episode = make_batch("long", 1, turns=2)[0]
    episode.turns[0].reply = "begin " + "x" * 2_000_000 + " end"
    episode.turns[1].observation = "line\n" * 100_000
    with ExperienceStore.open(store_path) as store:
        store.add_episodes([episode])
    shown = cli("show", episode.uuid, "--store", store_path)
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout) < 50_000
    assert "begin" in shown.stdout and "x end" in shown.stdout
    assert "[1,996,010 chars elided; --full to show]" in shown.stdout
    assert "[496,000 chars elided; --full to show]" in shown.stdout
    full = cli("show", episode.uuid, "--store", store_path, "--full")
    assert full.returncode == 0, full.stderr
    assert episode.turns[0].reply in full.stdout and episode.turns[1].observation in full.stdout
    assert "elided" not in full.stdout
