"""Values loaded once per process: one load per key even from several threads, a failed load keeps nothing."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rag.loaded import Loaded

pytestmark = pytest.mark.unit


def test_the_same_key_loads_once_even_from_several_threads_at_once():
    loaded: Loaded[object] = Loaded()
    calls = []
    start = threading.Barrier(8)
    loading, release = threading.Event(), threading.Event()

    def load() -> object:
        calls.append(1)
        loading.set()
        assert release.wait(10)
        return object()

    def ask() -> object:
        start.wait(10)
        return loaded.get(("embedder", "minilm"), load)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask) for _ in range(8)]
        assert loading.wait(10)
        time.sleep(0.2)  # the other seven ask meanwhile and wait for this load
        release.set()
        values = [f.result(timeout=10) for f in futures]
    assert len(calls) == 1
    assert all(v is values[0] for v in values)
    assert loaded.get(("embedder", "minilm"), load) is values[0] and len(calls) == 1


def test_different_keys_load_separately_and_one_does_not_wait_for_another():
    loaded: Loaded[str] = Loaded()
    slow_started, release = threading.Event(), threading.Event()

    def slow() -> str:
        slow_started.set()
        assert release.wait(10)
        return "a"

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(loaded.get, "a", slow)
        assert slow_started.wait(10)
        assert loaded.get("b", lambda: "b") == "b"  # while "a" is still loading
        release.set()
        assert first.result(timeout=10) == "a"
    assert loaded.get("a", lambda: "again") == "a" and loaded.get("b", lambda: "again") == "b"


def test_a_load_that_raises_keeps_nothing_and_the_next_call_retries():
    loaded: Loaded[str] = Loaded()

    def failing() -> str:
        raise OSError("model file missing")

    with pytest.raises(OSError, match="missing"):
        loaded.get("k", failing)
    assert loaded.get("k", lambda: "loaded") == "loaded"


def test_a_stale_value_is_loaded_again():
    loaded: Loaded[int] = Loaded()
    assert loaded.get("index", lambda: 1) == 1
    assert loaded.get("index", lambda: 2, stale=lambda kept: False) == 1
    assert loaded.get("index", lambda: 2, stale=lambda kept: kept == 1) == 2
    assert loaded.get("index", lambda: 3) == 2


def test_a_limit_drops_the_least_recently_used():
    loaded: Loaded[str] = Loaded(limit=2)
    loaded.get("a", lambda: "a")
    loaded.get("b", lambda: "b")
    loaded.get("a", lambda: "unused")  # "a" used last: "b" goes first
    loaded.get("c", lambda: "c")
    assert loaded.get("a", lambda: "a again") == "a"
    assert loaded.get("b", lambda: "b again") == "b again"


def test_clear_drops_every_value():
    loaded: Loaded[str] = Loaded()
    loaded.get("a", lambda: "a")
    assert loaded.items() == [("a", "a")]
    loaded.clear()
    assert loaded.get("a", lambda: "a again") == "a again"
