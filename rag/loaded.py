"""Models and indexes loaded once per process: one keyed cache with one lock per key."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Loaded(Generic[T]):
    """Values that are slow to make (a model, an index, a client), made once per process and key, then shared.

    `get(key, load)` returns the value kept for `key`, calling `load()` only when none is kept (or `stale(kept)`
    says it is out of date). Threads asking for the same key at once wait for one load; a key that is kept is
    returned at once, and other keys load meanwhile (no lock is held across keys while one loads). A load that
    raises keeps nothing: the next call tries again. With `limit`, the least recently used values beyond it are
    dropped (and loaded again when asked for)."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        self._values: OrderedDict[Hashable, T] = OrderedDict()
        self._loading: dict[Hashable, _KeyLock] = {}  # a lock for each key being asked for right now
        self._lock = threading.Lock()  # guards the two dicts; never held while a value loads

    def get(self, key: Hashable, load: Callable[[], T], stale: Callable[[T], bool] | None = None) -> T:
        with self._lock:
            if stale is None and key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            key_lock = self._loading.setdefault(key, _KeyLock())
            key_lock.users += 1
        try:
            with key_lock.lock:
                with self._lock:
                    found = key in self._values
                    kept = self._values.get(key)
                if found and (stale is None or not stale(kept)):  # loaded by the thread this one waited for
                    with self._lock:
                        if key in self._values:
                            self._values.move_to_end(key)
                    return kept  # type: ignore[return-value]
                value = load()
                with self._lock:
                    self._values[key] = value
                    self._values.move_to_end(key)
                    while self._limit is not None and len(self._values) > self._limit:
                        self._values.popitem(last=False)
                return value
        finally:
            with self._lock:
                key_lock.users -= 1
                if not key_lock.users:
                    del self._loading[key]

    def items(self) -> list[tuple[Hashable, T]]:
        """The keys and values kept now (a copy: loads may go on meanwhile)."""
        with self._lock:
            return list(self._values.items())

    def drop(self, where: Callable[[Hashable], bool]) -> int:
        """Drop the values whose key `where` accepts (they load again when next asked for); how many."""
        with self._lock:
            keys = [key for key in self._values if where(key)]
            for key in keys:
                del self._values[key]
        return len(keys)

    def clear(self) -> None:
        """Drop every value kept; each is loaded again when next asked for."""
        with self._lock:
            self._values.clear()


class _KeyLock:
    """One key's lock and how many callers hold or wait for it (it is dropped when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
