"""The checks every public function runs on its arguments: a path given as `str` or `os.PathLike`, a whole number
within its range. A bad argument raises `BadArgument` (a `BadInput`, and a `ValueError`) naming the argument and
what it accepts, before any work is done."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeAlias

from rag.errors import BadInput

PathArg: TypeAlias = str | os.PathLike[str]


class BadArgument(BadInput, ValueError):
    """An argument of a public function that is of the wrong type or out of its range; nothing was done.

    >>> try:
    ...     rag.retrieve("chip exports", k=0)
    ... except rag.BadArgument as error:
    ...     print(error)
    k: expected a whole number from 1 to 50, got 0
    """


def as_path(value: Any, name: str) -> Path:
    """`value` (a str or os.PathLike) as a Path, `~` expanded; BadArgument for anything else or an empty string."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise BadArgument(f"{name}: expected a path (str or os.PathLike), got {type(value).__name__} {value!r:.80}")
    if not value.strip() or "\0" in value:
        raise BadArgument(f"{name}: expected a path, got {value!r:.80}")
    return Path(value).expanduser()


def optional_path(value: Any, name: str) -> Path | None:
    """None stays None (the default corpus); anything else as `as_path`."""
    return None if value is None else as_path(value, name)


def bounded_int(value: Any, name: str, low: int, high: int) -> int:
    """`value` when it is a whole number from `low` to `high` (a bool is not a number here); else BadArgument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgument(f"{name}: expected a whole number from {low} to {high}, got {type(value).__name__} "
                          f"{value!r:.80}")
    if not low <= value <= high:
        raise BadArgument(f"{name}: expected a whole number from {low} to {high}, got {value}")
    return value


def text_items(value: Any, name: str) -> list[str]:
    """One string or an iterable of strings (not a mapping or bytes) as a non-empty list of non-empty strings."""
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (bytes, bytearray, dict)) or not hasattr(items, "__iter__"):
        raise BadArgument(f"{name}: expected a string or a list of strings, got {type(value).__name__}")
    found = list(items)
    if not found:
        raise BadArgument(f"{name}: expected at least one, got none")
    for item in found:
        if not isinstance(item, str) or not item.strip():
            raise BadArgument(f"{name}: expected non-empty strings, got {type(item).__name__} {item!r:.80}")
    return found
