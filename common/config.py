"""Config dataclasses whose fields carry their help text, and the command-line flags built from them.

    @dataclass
    class MyConfig:
        steps: int = config_field(4, "optimizer steps")

    add_arguments(parser, MyConfig)          # --steps STEPS  optimizer steps (default: 4)
    config = from_arguments(parser.parse_args(), MyConfig)

Every CLI that takes a config's settings declares them this way, so a flag's name, type, choices, default
and help are written once, on the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import field
from typing import Any, Literal


def config_field(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
                 **kwargs: Any) -> Any:  # fmt: skip
    """A dataclass field with a default, the help text its ``--flag`` shows and, for numbers, the range
    that both the flag (a usage error) and ``check_ranges`` (a ValueError) hold it to."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum, **kwargs})


def _range_problem(value: float, minimum: float | None, maximum: float | None) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if minimum is not None and value < minimum:
        return f"must be >= {minimum}, got {value}"
    if maximum is not None and value > maximum:
        return f"must be <= {maximum}, got {value}"
    return None


def check_ranges(config: Any) -> None:
    """ValueError naming the first numeric field of ``config`` outside its declared range (None passes)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            problem = _range_problem(value, f.metadata.get("minimum"), f.metadata.get("maximum"))
            if problem:
                raise ValueError(f"{f.name} {problem}")


def _bounded(kind: type, minimum: float | None, maximum: float | None) -> Callable[[str], Any]:
    """An argparse type: ``kind`` parsed from text, finite and inside the range, else a usage error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        problem = _range_problem(value, minimum, maximum)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, prefix: str = "",
    exclude: Collection[str] = (),
) -> None:
    """One ``--flag`` per field of ``cls`` (``--<prefix><field>``, fields in ``exclude`` left out), with its
    help, type, choices and default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        hint = hints[f.name]
        flag = "--" + (prefix + f.name).replace("_", "-")
        dest = prefix.replace("-", "_") + f.name
        default = f.default
        if hint is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default,
                                help=f.metadata["help"])  # fmt: skip
            continue
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            hint = next(a for a in args if a is not type(None))
            args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple:
            parser.add_argument(flag, dest=dest, nargs="*", default=default, metavar="NAME=VALUE",
                                help=f.metadata["help"])  # fmt: skip
            continue
        choices = list(args) if typing.get_origin(hint) is Literal else None
        kind = str if choices else hint
        if kind in (int, float):
            kind = _bounded(kind, f.metadata.get("minimum"), f.metadata.get("maximum"))
        parser.add_argument(flag, dest=dest, type=kind, choices=choices, default=default,
                            help=f"{f.metadata['help']} (default: {default})")  # fmt: skip


def from_arguments(namespace: argparse.Namespace, cls: type, *, prefix: str = "", **fixed: Any) -> Any:
    """Build ``cls`` from the parsed flags that ``add_arguments(..., cls, prefix=prefix)`` declared; the
    fields it excluded take their values from ``fixed`` (or their defaults)."""
    dest = prefix.replace("-", "_")
    values = {f.name: getattr(namespace, dest + f.name) for f in dataclasses.fields(cls) if f.name not in fixed
              and hasattr(namespace, dest + f.name)}  # fmt: skip
    return cls(**values, **fixed)
