"""Reliability on real files and real processes: concurrent writers, SIGKILL mid-write, bad and locked files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_helpers import digest, episode_uuid, make_batch

from experience_store import ExperienceStore, NotAStore, StoreCorrupt, StoreLocked

HELPER = Path(__file__).with_name("store_helpers.py")


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
