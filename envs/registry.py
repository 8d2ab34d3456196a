"""Names for environments: ``envs.make(name)``, ``envs.register(...)``, ``envs.names()``.

Every env has a short name (``math``) and a versioned Gymnasium id (``opcd/Math-v1``); both work in
``make`` and in every CLI, and the Gymnasium id also works with ``gymnasium.make``. A ``module:Class``
path works too, and installed packages can add envs through the ``opcd.envs`` entry-point group
(``name = "package.module:EnvClass"``), so a researcher's env is usable by name without editing this
project.
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.metadata
import json
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gymnasium

from envs.base import TextEnv

EntryPoint = str | Callable[..., TextEnv]
ENTRY_POINT_GROUP = "opcd.envs"


@dataclass(frozen=True)
class EnvSpec:
    """A registered env: its short name, Gymnasium id, constructor and default kwargs."""

    name: str
    gym_id: str
    entry_point: EntryPoint
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., TextEnv]:
        return _load_entry_point(self.entry_point)


_SPECS: dict[str, EnvSpec] = {}
_ALIASES: dict[str, str] = {}  # gym id -> short name
_plugins_loaded = False


def _load_entry_point(entry_point: EntryPoint) -> Callable[..., TextEnv]:
    if callable(entry_point):
        return entry_point
    module_name, _, attr = entry_point.partition(":")
    if not attr:
        raise ValueError(f"entry point {entry_point!r} must look like 'package.module:EnvClass'")
    return getattr(importlib.import_module(module_name), attr)


def register(
    name: str,
    entry_point: EntryPoint,
    *,
    gym_id: str | None = None,
    override: bool = False,
    **kwargs: Any,
) -> EnvSpec:
    """Register an env under a short ``name`` and a Gymnasium id (``opcd/<Name>-v0`` by default).

    ``entry_point`` is the env class (or any callable returning a ``TextEnv``) or a lazy
    ``"module:Class"`` string; ``kwargs`` are default constructor arguments.
    """
    if not name or ":" in name or "/" in name:
        raise ValueError(f"env name {name!r} must be non-empty and contain no ':' or '/'")
    gym_id = gym_id or f"opcd/{name[:1].upper()}{name[1:]}-v0"
    if not override and (name in _SPECS or gym_id in _ALIASES):
        raise ValueError(f"env {name!r} ({gym_id}) is already registered; pass override=True to replace it")
    spec = EnvSpec(name=name, gym_id=gym_id, entry_point=entry_point, kwargs=dict(kwargs))
    _SPECS[name] = spec
    _ALIASES[gym_id] = name
    if gym_id in gymnasium.registry:
        del gymnasium.registry[gym_id]
    gymnasium.register(id=gym_id, entry_point=entry_point, kwargs=dict(kwargs))
    return spec


def unregister(name: str) -> None:
    """Remove a registered env (its short name and Gymnasium id); unknown names are an error."""
    env_spec = spec(name)
    del _SPECS[env_spec.name]
    del _ALIASES[env_spec.gym_id]
    gymnasium.registry.pop(env_spec.gym_id, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _SPECS:
            register(ep.name, ep.value)


def names() -> list[str]:
    """The short names of every registered env, sorted."""
    _load_plugins()
    return sorted(_SPECS)


def spec(name: str) -> EnvSpec:
    """The spec for a short name or Gymnasium id; a clear error listing the known names otherwise."""
    _load_plugins()
    key = _ALIASES.get(name, name)
    if key in _SPECS:
        return _SPECS[key]
    known = ", ".join(f"{n} ({_SPECS[n].gym_id})" for n in sorted(_SPECS))
    raise KeyError(f"unknown env {name!r}; known envs: {known}")


def make(name: str, **kwargs: Any) -> TextEnv:
    """Build an env by short name, Gymnasium id or ``module:Class`` path (unwrapped, ready to reset)."""
    if ":" in name:
        return _load_entry_point(name)(**kwargs)
    env_spec = spec(name)
    return env_spec.load()(**{**env_spec.kwargs, **kwargs})


def configure(name: str, **kwargs: Any) -> EnvSpec:
    """Change the default constructor arguments of a registered env for this process.

    This is how the CLIs' ``--env-args max_steps=10`` reaches every ``make(name)`` of a run without
    renaming the env (the store keeps one name per env). The arguments are checked by building the env
    once: an argument the env does not take, or a bad value, is a ``ValueError`` naming both. A single
    string for an argument annotated as a sequence of strings is a one-element tuple (``families=arithmetic``).
    """
    env_spec = spec(name)
    factory = env_spec.load()
    kwargs = {key: _as_declared(factory, key, value) for key, value in kwargs.items()}
    merged = {**env_spec.kwargs, **kwargs}
    try:
        factory(**merged).close()
    except (TypeError, ValueError) as error:
        raise ValueError(f"env {env_spec.name!r} rejected arguments {kwargs}: {error}") from error
    return register(env_spec.name, env_spec.entry_point, gym_id=env_spec.gym_id, override=True, **merged)


_NAME_SEQUENCES = (collections.abc.Sequence, collections.abc.Iterable, list, tuple)


def _as_declared(factory: Callable[..., TextEnv], key: str, value: Any) -> Any:
    """``value``, or ``(value,)`` where ``factory`` takes a sequence of names and ``value`` is one name
    (``--env-args families=arithmetic``: one family, not the letters of its name)."""
    if not isinstance(value, str):
        return value
    try:
        hint = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory).get(key)
    except (NameError, TypeError):  # annotations this module cannot evaluate: take the value as it is
        return value
    for option in (hint, *typing.get_args(hint)):  # X, or each member of X | None
        if typing.get_origin(option) in _NAME_SEQUENCES and typing.get_args(option)[:1] == (str,):
            return (value,)
    return value


def parse_env_args(pairs: Iterable[str]) -> dict[str, Any]:
    """``["max_steps=10", "difficulty=hard", "levels=[1, 2]"]`` -> keyword arguments.

    A value is read as JSON (numbers, booleans, null, lists) and kept as a plain string otherwise.
    """
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"env argument {pair!r} must look like NAME=VALUE, e.g. max_steps=10")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs
