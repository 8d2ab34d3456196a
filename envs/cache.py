"""Where generated artefacts live on disk.

Everything the project generates once and reuses (compiled TextWorld games, converted model weights)
goes under one cache root: ``$OPCD_CACHE_DIR`` or ``~/.cache/opcd``, written there through
``common.files.atomic_path``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The project's cache folder (created on demand)."""
    root = Path(os.environ.get("OPCD_CACHE_DIR") or Path.home() / ".cache" / "opcd").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
