"""Fast construction of frozen, slotted dataclasses for the hot path.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (to get
round its own ``__setattr__``, which refuses), ~3x the cost of filling the slots through
their descriptors. ``constructor(cls)`` and ``replacer(cls)`` generate straight-line
functions that do the latter; they run per event, several times. Only for classes without
``__post_init__`` (nothing would call it) and with ``slots=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def _slot_setters(cls: type) -> tuple[list[str], dict[str, Any]]:
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__, which these would skip")
    names = [f.name for f in fields(cls)]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for n in names:
        env[f"_set_{n}"] = cls.__dict__[n].__set__  # the slot's member descriptor
    return names, env


def constructor(cls: type[T]) -> Callable[..., T]:
    """``cls(...)`` with every field given (by position or keyword), no defaults."""
    names, env = _slot_setters(cls)
    lines = [f"def make({', '.join(names)}):", "    new = _new(_cls)"]
    lines += [f"    _set_{n}(new, {n})" for n in names]
    lines.append("    return new")
    exec("\n".join(lines), env)
    make: Callable[..., T] = env["make"]
    make.__doc__ = f"{cls.__name__}(...), built through its slots (schemas.frozen)"
    return make


def replacer(cls: type[T]) -> Callable[[T, dict[str, Any]], T]:
    """``dataclasses.replace(obj, **changes)`` as ``replace(obj, changes)``; unknown names in
    ``changes`` raise TypeError, as there."""
    names, env = _slot_setters(cls)
    env["_names"] = frozenset(names)
    env["_unknown"] = _unknown
    lines = ["def replace(obj, changes):",
             "    if not changes.keys() <= _names:", "        _unknown(_cls, changes, _names)",
             "    new = _new(_cls)", "    get = changes.get"]
    lines += [f"    _set_{n}(new, get({n!r}, obj.{n}))" for n in names]
    lines.append("    return new")
    exec("\n".join(lines), env)
    replace: Callable[[T, dict[str, Any]], T] = env["replace"]
    return replace


def _unknown(cls: type, changes: dict[str, Any], names: frozenset[str]) -> None:
    raise TypeError(f"{cls.__name__} has no fields {sorted(set(changes) - names)}")
