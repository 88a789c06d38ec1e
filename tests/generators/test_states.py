"""Saved generator states: the file format, verification on load, pruning, and a writer SIGKILLed mid-save
(real files and processes, no model)."""

import os
import time
from pathlib import Path

import pytest

from rag.generators.states import MAGIC, SavedState, StateStore, state_key
from tests.sigkill import STATE_KEYS, Child, dead_pid, kill_after, payload


def store(tmp_path, in_memory=2, on_disk=3) -> StateStore:
    return StateStore(tmp_path / "states", in_memory, on_disk)


@pytest.mark.unit
def test_a_saved_state_loads_back_exactly(tmp_path):
    states = store(tmp_path)
    saved = SavedState("k1", [1, 2, 3], os.urandom(4096), label="seed.txt")
    path = states.save(saved)
    assert path.read_bytes().startswith(MAGIC) and not list(path.parent.glob(".*partial*"))
    loaded = states.load("k1")
    assert (loaded.tokens, loaded.data, loaded.label) == ([1, 2, 3], saved.data, "seed.txt")


@pytest.mark.unit
def test_a_truncated_state_is_detected_and_deleted(tmp_path):
    states = store(tmp_path)
    path = states.save(SavedState("k1", [1, 2], os.urandom(4096)))
    path.write_bytes(path.read_bytes()[:-100])
    assert states.load("k1") is None and not path.exists()


@pytest.mark.unit
def test_a_state_with_flipped_bytes_is_detected(tmp_path):
    states = store(tmp_path)
    path = states.save(SavedState("k1", [1, 2], bytes(4096)))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert states.load("k1") is None and not path.exists()


@pytest.mark.unit
def test_a_foreign_state_under_this_name_is_not_used(tmp_path):
    states = store(tmp_path)
    other = states.save(SavedState("other-model", [9], os.urandom(64)))
    os.replace(other, states.path("k1"))
    assert states.load("k1") is None and not states.path("k1").exists()
    states.path("k2").write_bytes(b"not a state at all")
    assert states.load("k2") is None


@pytest.mark.unit
def test_memory_keeps_the_most_recently_used(tmp_path):
    states = store(tmp_path, in_memory=2)
    for key in ("a", "b"):
        states.remember(key, key.upper())
    assert states.recall("a") == "A"  # "a" is now the most recent
    states.remember("c", "C")
    assert states.recall("b") is None and states.recall("a") == "A" and states.recall("c") == "C"


@pytest.mark.unit
def test_disk_keeps_at_most_the_configured_number(tmp_path):
    states = store(tmp_path, on_disk=2)
    for n, key in enumerate(("a", "b", "c")):
        path = states.save(SavedState(key, [n], b"x"))
        os.utime(path, (1000 + n, 1000 + n))
    assert sorted(p.stem for p in states.folder.glob("*.state")) == ["b", "c"]


@pytest.mark.unit
def test_keys_change_with_any_part():
    base = state_key(model_sha256="m1", engine="llama-cpp 0.3.36", prefix="p1")
    assert base == state_key(prefix="p1", engine="llama-cpp 0.3.36", model_sha256="m1")
    assert base != state_key(model_sha256="m2", engine="llama-cpp 0.3.36", prefix="p1")
    assert base != state_key(model_sha256="m1", engine="llama-cpp 0.3.37", prefix="p1")
    assert base != state_key(model_sha256="m1", engine="llama-cpp 0.3.36", prefix="p2")


@pytest.mark.integration
def test_partials_of_killed_writers_are_cleared_on_save(tmp_path):
    states = store(tmp_path)
    states.folder.mkdir()
    dead = states.folder / f".k1.state.partial-{dead_pid()}"
    live = states.folder / f".k2.state.partial-{os.getpid()}"  # a save in progress in this process
    silent = states.folder / f".k3.state.partial-{os.getpid()}"  # unchanged for hours: its pid was reused
    for partial in (dead, live, silent):
        partial.write_bytes(MAGIC)
    os.utime(silent, (time.time() - 7200,) * 2)
    states.save(SavedState("k4", [1], b"x"))
    assert [p.exists() for p in (dead, live, silent)] == [False, True, False]


STATE_SIZE = 8 << 20  # several MB per state, so that a save takes measurable time
# Exact moments (the child stops there: see tests/sigkill.py), then seconds after the child is ready.
STATE_KILLS = [("write:1", 0.0), ("write:4", 0.0), ("fsync:5", 0.0), ("replace:6", 0.0)] + [
    ("none", delay) for delay in (0.02, 0.1, 0.2, 0.35, 0.5, 0.8)]


def _in_flight(lines: list[str]) -> tuple[str, int] | None:
    """The (key, round) the child was saving when it died: a `saving` line with no `saved` after it."""
    progress = [line.split() for line in lines if line.startswith(("saving ", "saved "))]
    return (progress[-1][1], int(progress[-1][2])) if progress and progress[-1][0] == "saving" else None


def _check_states(folder: Path, saved: dict[str, int], in_flight: tuple[str, int] | None) -> dict[str, int]:
    """Every state file loads exactly as the child meant it, and is the last saved round or the one in flight."""
    assert {p.stem for p in folder.glob("*.state")} <= {*STATE_KEYS, "parent"}
    states, found = StateStore(folder, 0, len(STATE_KEYS) + 1), {}
    for key in STATE_KEYS:
        loaded = states.load(key)
        allowed = {saved.get(key)} | ({in_flight[1]} if in_flight and in_flight[0] == key else set())
        if loaded is None:
            assert None in allowed and not states.path(key).exists(), key
            continue
        round_ = loaded.tokens[0]
        assert round_ in allowed, (key, round_, allowed)
        assert loaded.data == payload(key, round_, STATE_SIZE) and loaded.label == f"{key}@{round_}"
        found[key] = round_
    return found


def _check_pause(folder: Path, point: str, pid: int, in_flight: tuple[str, int] | None,
                 found: dict[str, int], saved: dict[str, int]) -> None:
    """At a pause the kill hit the save in flight: before the rename the old state stands beside the partial file,
    after it the new state is in place."""
    if point == "none":
        return
    assert in_flight, "the child was not saving when it was killed"
    key, round_ = in_flight
    if point.startswith("replace"):
        assert found[key] == round_
    else:
        assert (folder / f".{key}.state.partial-{pid}").is_file()
        assert found.get(key) == saved.get(key) != round_


@pytest.mark.integration
def test_states_survive_sigkill_at_any_moment(tmp_path):
    folder = tmp_path / "states"
    saved: dict[str, int] = {}  # key -> the last round a child said it saved
    killed, mid_write = [], 0
    for n, (point, delay) in enumerate(STATE_KILLS):
        with Child("states", str(folder), point, str(100 * n), str(STATE_SIZE)) as child:
            killed.append(kill_after(child, point, delay))
        in_flight = _in_flight(child.lines)
        saved.update({key: int(round_) for _, key, round_ in (x.split() for x in child.lines if x[:6] == "saved ")})
        found = _check_states(folder, saved, in_flight)
        _check_pause(folder, point, child.pid, in_flight, found, saved)
        mid_write += any(folder.glob(f".*.partial-{child.pid}"))
        saved.update(found)
        states = StateStore(folder, 0, len(STATE_KEYS) + 1)  # a later process saves and loads as usual
        data = payload("parent", n, 1 << 20)
        states.save(SavedState("parent", [n], data))
        assert states.load("parent").data == data
        assert not list(folder.glob(".*.partial-*")), "the killed writer's partial file was not cleared"
    assert all(killed) and mid_write >= 3, (killed, mid_write)
    print(f"states: {len(killed)} kills, {mid_write} of them mid-write")
