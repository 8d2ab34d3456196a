"""Safe file writes and locks between processes.

Writers build in a temporary path beside the target and rename it into place, so a reader never sees a
half-written file and concurrent writers of the same artefact cannot corrupt it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to build ``target`` in (file or folder); rename it into place on success.

    A file replaces an existing ``target``. A folder whose ``target`` appeared meanwhile (another process
    won the race) is discarded: both are the same artefact. On error the temporary path is removed and
    ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    build = tmp / target.name
    try:
        yield build
        if not build.exists():
            raise FileNotFoundError(f"nothing was written to {build}")
        try:
            os.replace(build, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` through ``atomic_path``: readers see the old file or the new one."""
    with atomic_path(target) as build:
        build.write_text(text, encoding="utf-8")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) between processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
