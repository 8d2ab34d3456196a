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
import types
import typing
from dataclasses import field
from typing import Any, Literal


def config_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and the help text its ``--flag`` shows."""
    return field(default=default, metadata={"help": help, **kwargs})


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, prefix: str = "") -> None:
    """One ``--flag`` per field of ``cls`` (``--<prefix><field>``), with its help, type, choices and default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
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
        parser.add_argument(flag, dest=dest, type=kind, choices=choices, default=default,
                            help=f"{f.metadata['help']} (default: {default})")  # fmt: skip


def from_arguments(namespace: argparse.Namespace, cls: type, *, prefix: str = "") -> Any:
    """Build ``cls`` from the parsed flags that ``add_arguments(..., cls, prefix=prefix)`` declared."""
    dest = prefix.replace("-", "_")
    return cls(**{f.name: getattr(namespace, dest + f.name) for f in dataclasses.fields(cls)})
