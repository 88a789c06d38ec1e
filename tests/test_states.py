"""Saved generator states: the file format, verification on load, and pruning (real files, no model)."""

import os

from rag.states import MAGIC, SavedState, StateStore, state_key


def store(tmp_path, in_memory=2, on_disk=3) -> StateStore:
    return StateStore(tmp_path / "states", in_memory, on_disk)


def test_a_saved_state_loads_back_exactly(tmp_path):
    states = store(tmp_path)
    saved = SavedState("k1", [1, 2, 3], os.urandom(4096), label="seed.txt")
    path = states.save(saved)
    assert path.read_bytes().startswith(MAGIC) and not list(path.parent.glob(".*partial*"))
    loaded = states.load("k1")
    assert (loaded.tokens, loaded.data, loaded.label) == ([1, 2, 3], saved.data, "seed.txt")


def test_a_truncated_state_is_detected_and_deleted(tmp_path):
    states = store(tmp_path)
    path = states.save(SavedState("k1", [1, 2], os.urandom(4096)))
    path.write_bytes(path.read_bytes()[:-100])
    assert states.load("k1") is None and not path.exists()


def test_a_state_with_flipped_bytes_is_detected(tmp_path):
    states = store(tmp_path)
    path = states.save(SavedState("k1", [1, 2], bytes(4096)))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert states.load("k1") is None and not path.exists()


def test_a_foreign_state_under_this_name_is_not_used(tmp_path):
    states = store(tmp_path)
    other = states.save(SavedState("other-model", [9], os.urandom(64)))
    os.replace(other, states.path("k1"))
    assert states.load("k1") is None and not states.path("k1").exists()
    states.path("k2").write_bytes(b"not a state at all")
    assert states.load("k2") is None


def test_memory_keeps_the_most_recently_used(tmp_path):
    states = store(tmp_path, in_memory=2)
    for key in ("a", "b"):
        states.remember(key, key.upper())
    assert states.recall("a") == "A"  # "a" is now the most recent
    states.remember("c", "C")
    assert states.recall("b") is None and states.recall("a") == "A" and states.recall("c") == "C"


def test_disk_keeps_at_most_the_configured_number(tmp_path):
    states = store(tmp_path, on_disk=2)
    for n, key in enumerate(("a", "b", "c")):
        path = states.save(SavedState(key, [n], b"x"))
        os.utime(path, (1000 + n, 1000 + n))
    assert sorted(p.stem for p in states.folder.glob("*.state")) == ["b", "c"]


def test_keys_change_with_any_part():
    base = state_key(model_sha256="m1", engine="llama-cpp 0.3.36", prefix="p1")
    assert base == state_key(prefix="p1", engine="llama-cpp 0.3.36", model_sha256="m1")
    assert base != state_key(model_sha256="m2", engine="llama-cpp 0.3.36", prefix="p1")
    assert base != state_key(model_sha256="m1", engine="llama-cpp 0.3.37", prefix="p1")
    assert base != state_key(model_sha256="m1", engine="llama-cpp 0.3.36", prefix="p2")
