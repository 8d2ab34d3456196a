"""How every command line ends on an error or Ctrl-C: one line, and a known exit status."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


@contextmanager
def one_line_errors(errors: tuple[type[BaseException], ...], interrupted: str, *, out: Console,
                    err: Console) -> Iterator[None]:  # fmt: skip
    """Inside the block, an exception of ``errors`` is one red line on ``err`` and exit status 2 (a KeyError
    shows its message, not its repr); Ctrl-C prints ``interrupted`` on ``out`` and exits with 130."""
    try:
        yield
    except errors as error:
        err.print(f"[red]error:[/] {error.args[0] if isinstance(error, KeyError) else error}")
        sys.exit(2)
    except KeyboardInterrupt:
        out.print(f"[yellow]{interrupted}[/]")
        sys.exit(130)
