"""Running a CLI's ``main`` in the test process (no interpreter start-up)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def run_main(main: Callable[[list[str]], None], capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Call ``main(args)``; return (exit code, stdout, stderr with rich's line wrapping undone)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


def write_context(path: Path, content: str | bytes | None) -> None:
    """A context file at ``path`` holding ``content`` (text or bytes); ``None`` makes a directory there."""
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
