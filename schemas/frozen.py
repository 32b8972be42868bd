"""Fast construction of frozen, slotted dataclasses for the hot path.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (to get
round its own ``__setattr__``, which refuses), ~3x the cost of filling the slots through
their descriptors. ``constructor(cls)`` generates a straight-line function that does the
latter; such constructors run per event, several times. Only for classes without
``__post_init__`` (nothing would call it) and with ``slots=True``. (The customer state
itself is a msgspec Struct: processors/state.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def _slot_setters(cls: type) -> tuple[list[str], dict[str, Any]]:
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__, which constructor would skip")
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
