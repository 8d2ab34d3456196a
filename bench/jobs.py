"""A resumable job scheduler for long benchmark plans: jobs are CLI commands run as subprocesses.

A finished job is recorded in a ledger (a JSON file) with its command and wall time, and is skipped by a
rerun; a resumable job (a distillation) continues from its last checkpoint with ``--resume``; any other
interrupted job starts over. Workers share a plan: each claims a job (a pid file in a claims folder)
before running it, skips resumable jobs that another live worker holds and waits for setup jobs that
later ones need. ``bench.reproduce`` builds the plan and writes the report.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import locked, write_text_atomic


@dataclass(frozen=True)
class Job:
    """One command; ``output`` is what it makes (a store, a context file or a run folder; None: it adds to
    a store that an earlier job made)."""

    name: str
    argv: tuple[str, ...]
    output: Path | None
    resumable: bool = False  # a distillation: rerun with --resume instead of starting over

    @property
    def command(self) -> str:
        return "python " + shlex.join(self.argv)


class Ledger:
    """OUT/jobs.json: the finished jobs with their command and wall time (of the attempt that finished)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = path.with_name(path.name + ".lock")

    @property
    def done(self) -> dict[str, dict[str, Any]]:
        """The finished jobs, as the file says now (other workers add to it)."""
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def record(self, job: Job, seconds: float, resumed: bool = False) -> None:
        """Add ``job``: its command, the wall time of the attempt that finished (``resumed``: from a
        checkpoint of an earlier one) and this process's OMP_NUM_THREADS."""
        entry = {"command": job.command, "seconds": round(seconds, 1), "finished": time.time(), "resumed": resumed,
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}  # fmt: skip
        with locked(self.lock):
            done = {**self.done, job.name: entry}
            write_text_atomic(self.path, json.dumps(done, indent=1))


class Claims:
    """OUT/claims/JOB holds the pid of the worker running JOB; a dead worker's claim may be taken over."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> bool:
        """Claim ``name`` for this process; False while another live worker holds it."""
        path = self.folder / name
        with locked(self.folder / ".lock"):
            if path.exists():
                holder = int(path.read_text())
                if holder != os.getpid() and pid_alive(holder):
                    return False
            path.write_text(str(os.getpid()))
            return True

    def release(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def work(jobs: Iterable[Job], ledger: Ledger, claims: Claims, log: Callable[[str], None],
         after_job: Callable[[], None]) -> None:  # fmt: skip
    """Run every job that is not finished and that no other worker holds, in order."""
    for job in jobs:
        if job.name in ledger.done:
            continue
        if not claims.take(job.name):
            if job.resumable:  # a run another worker is making; later runs do not need it
                continue
            log(f"waiting for {job.name}: another worker is making it, and later jobs need it")
            while not claims.take(job.name):
                time.sleep(10)
        try:
            finished = run_job(job, ledger, log)
        finally:
            claims.release(job.name)
        if not finished and not job.resumable:
            log(f"stopping: later jobs need {job.name}")
            return
        after_job()


def run_job(job: Job, ledger: Ledger, log: Callable[[str], None]) -> bool:
    """Run ``job`` unless finished; True when it finished now or before."""
    if job.name in ledger.done:
        return True
    argv = list(job.argv)
    resumed = job.resumable and job.output is not None and (job.output / "latest").exists()  # a checkpoint
    if job.resumable and job.output is not None and (job.output / "metrics.jsonl").exists():
        argv.append("--resume")
    elif not job.resumable and job.output is not None and job.output.exists():
        # A half-made store or file from an interrupted run: start that job over.
        shutil.rmtree(job.output) if job.output.is_dir() else job.output.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(job.output) + suffix).unlink(missing_ok=True)
    log(f"[{time.strftime('%H:%M:%S')}] {job.name}: {job.command}")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        log(f"  failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        return False
    ledger.record(job, time.perf_counter() - start, resumed)
    log(f"  done in {time.perf_counter() - start:.0f} s")
    return True
