"""Where generated artefacts live on disk, and how they get there safely.

Everything the project generates once and reuses (compiled TextWorld games, converted model weights)
goes under one cache root: ``$OPCD_CACHE_DIR`` or ``~/.cache/opcd``. Writers build in a temporary
path beside the target and rename it into place, so a reader never sees a half-written file and
concurrent writers of the same artefact cannot corrupt it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """The project's cache folder (created on demand)."""
    root = Path(os.environ.get("OPCD_CACHE_DIR") or Path.home() / ".cache" / "opcd").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to build ``target`` in (file or folder); rename it into place on success.

    If ``target`` appeared meanwhile (another process won the race) the new build is discarded: both
    are the same artefact. On error the temporary path is removed and ``target`` is untouched.
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
