"""Reliability on real files and processes: concurrent writers, SIGKILL mid-write, bad, locked, read-only files."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from store_helpers import digest, episode_uuid, make_batch

from experience_store import ExperienceStore, NotAStore, StoreCorrupt, StoreLocked
from experience_store.jsonl import to_json

HELPER = Path(__file__).with_name("store_helpers.py")
REPO = Path(__file__).resolve().parents[2]


def _worker(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(HELPER), *map(str, args)], stderr=subprocess.PIPE)


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_concurrent_writer_processes_all_succeed(store_path: Path) -> None:
    # Four processes race to create the same new store, then interleave 25 committed batches each.
    workers, batches, size = 4, 25, 8
    procs = [_worker("append", store_path, f"w{w}", batches, size) for w in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    expected = {episode_uuid(f"w{w}.{b}", i) for w in range(workers) for b in range(batches) for i in range(size)}
    with ExperienceStore.open(store_path, readonly=True) as store:
        assert {e.uuid for e in store.episodes()} == expected
        assert store.count_episodes() == workers * batches * size
        assert store.check() == []


def test_sigkill_mid_transaction_keeps_every_committed_episode(store_path: Path, tmp_path: Path) -> None:
    batches, size = 5, 20
    ready = tmp_path / "inside-transaction"
    proc = _worker("crash", store_path, batches, size, ready)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the writer never reached its transaction"
        time.sleep(0.01)
    wal = store_path.with_name(store_path.name + "-wal")
    at_ready = wal.stat().st_size
    while wal.stat().st_size < at_ready + 256 * 1024:  # uncommitted pages are spilling into the WAL: kill now
        assert time.monotonic() < deadline, "the writer stopped writing"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert _integrity(store_path) == "ok"
    committed = {episode_uuid(f"committed.{b}", i) for b in range(batches) for i in range(size)}
    with ExperienceStore.open(store_path) as store:
        assert {e.uuid for e in store.episodes()} == committed  # all committed, nothing of the killed batch
        assert store.check() == []
        assert store.add_episodes(make_batch("after", 3)) == 3  # and the store takes writes again
    assert _integrity(store_path) == "ok"


def test_locked_store_times_out_with_a_clear_error(populated: Path) -> None:
    holder = sqlite3.connect(populated, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
    try:
        with ExperienceStore.open(populated, timeout=0.3) as store:
            assert store.count_episodes() == 23  # WAL: reading is not blocked
            start = time.monotonic()
            with pytest.raises(StoreLocked, match=rf"{populated.name} is locked .* \(waited 0.3 s"):
                store.add_episodes(make_batch("blocked", 2))
            assert 0.25 < time.monotonic() - start < 10
        holder.execute("ROLLBACK")
        with ExperienceStore.open(populated, timeout=0.3) as store:
            assert store.add_episodes(make_batch("unblocked", 2)) == 2
    finally:
        holder.close()


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n" * 100)
    before = digest(notes)
    for readonly in (False, True):
        with pytest.raises(NotAStore, match="not an experience store"):
            ExperienceStore.open(notes, readonly=readonly)
    assert digest(notes) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no -wal / -shm either
    with pytest.raises(NotAStore, match="not a file"):
        ExperienceStore.open(tmp_path)


def test_a_truncated_store_is_refused_untouched(populated: Path) -> None:
    size = populated.stat().st_size
    os.truncate(populated, size // 2)
    before = digest(populated)
    for readonly in (False, True):
        with pytest.raises(StoreCorrupt, match="truncated"):
            ExperienceStore.open(populated, readonly=readonly)
    os.truncate(populated, 40)
    with pytest.raises(StoreCorrupt, match="truncated"):
        ExperienceStore.open(populated)
    assert populated.stat().st_size == 40
    assert before != digest(populated)  # (sanity: the second truncation did change it)


def test_a_corrupt_store_is_reported_not_repaired(store_path: Path) -> None:
    with ExperienceStore.open(store_path) as store:
        for b in range(3):
            store.add_episodes(make_batch(f"c{b}", 100, turns=5))
    size = store_path.stat().st_size
    with store_path.open("r+b") as file:
        file.seek(size // 2)
        file.write(b"\xa5" * 4096 * 8)  # eight pages of garbage mid-file
    before = digest(store_path)
    with ExperienceStore.open(store_path, readonly=True) as store:
        problems = store.check()
        assert problems and all(p.startswith("integrity: ") for p in problems)
        with pytest.raises(StoreCorrupt, match="malformed"):
            sum(1 for _ in store.episodes())
    assert digest(store_path) == before


def _without_permission_override() -> None:
    """A child's set-up under root: drop the capabilities that let root ignore file modes, so that a
    read-only folder or file is one for the child too (prctl PR_CAPBSET_DROP takes effect at exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _unprivileged() -> Callable[[], None] | None:
    """The set-up for a child that file modes apply to (None: they already do); skip where none is possible."""
    if os.geteuid() != 0:
        return None
    try:
        subprocess.run(["true"], preexec_fn=_without_permission_override, check=True)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("running as root without CAP_SETPCAP: cannot make a folder read-only for a child")
    return _without_permission_override


# Runs each argv (JSON on argv[1]) through the CLI's main in one process, then opens the store to write.
_CHILD = """
import contextlib, io, json, sys
from experience_store import ExperienceStore, StoreError
from experience_store.__main__ import main
results = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        results.append([main(argv), err.getvalue()])
try:
    ExperienceStore.open(sys.argv[2]).close()
except StoreError as exc:
    results.append([type(exc).__name__, str(exc)])
print(json.dumps(results))
"""


@pytest.mark.parametrize("read_only", ["folder", "file"])
def test_a_read_only_store_is_read_and_refused_for_writing_at_open(
    populated: Path, tmp_path: Path, read_only: str
) -> None:
    setup = _unprivileged()
    folder = tmp_path / "shared"
    folder.mkdir()
    store = folder / "exp.db"
    shutil.copy(populated, store)
    dump = tmp_path / "in.jsonl"
    dump.write_text(json.dumps(to_json(make_batch("new", 1)[0])) + "\n")
    with ExperienceStore.open(populated, readonly=True) as opened:
        episode = next(opened.episodes()).uuid
    reads = [["stats"], ["check"], ["episodes"], ["show", episode], ["knowledge"], ["runs"], ["export", "--out", "-"]]
    writes = [["import", str(dump)], ["import", str(dump), "--check-only"], ["merge", str(populated)]]
    argvs = [[*argv, "--store", str(store)] for argv in reads + writes]
    argvs.append(["merge", str(store), "--store", str(tmp_path / "merged.db")])  # a read-only merge source
    before, mtime = digest(store), store.stat().st_mtime_ns
    (folder if read_only == "folder" else store).chmod(0o555 if read_only == "folder" else 0o444)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(argvs), str(store)],
            cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=setup,
        )
    finally:
        folder.chmod(0o755)
        store.chmod(0o644)
    assert child.returncode == 0, child.stderr
    *results, opened_to_write = json.loads(child.stdout)
    assert [code for code, _ in results[: len(reads)]] == [0] * len(reads), results
    assert results[-1] == [0, ""]  # the merge from it
    reason = "no write permission on " + (f"its folder {folder}" if read_only == "folder" else "the file")
    for code, error in results[len(reads) : -1]:
        assert code == 1 and error == f"error: {store} cannot be written: {reason}\n"
    assert opened_to_write == ["StoreReadOnly", f"{store} cannot be written: {reason}"]
    assert digest(store) == before and store.stat().st_mtime_ns == mtime
    if read_only == "folder":
        assert sorted(p.name for p in folder.iterdir()) == ["exp.db"]  # no -wal or -shm either
