"""Atomic file writes (a partial file beside the target, fsync, rename) and clearing killed writers' partial files."""

import os
import time
from pathlib import Path

import pytest

from rag.files import (
    atomic_file,
    partial_path,
    remove_stale_partials,
    write_bytes_atomically,
    write_text_atomically,
)

pytestmark = pytest.mark.unit


def unused_pid() -> int:
    """A pid no process has (found without starting one)."""
    for pid in range(4_194_303, 1, -1):  # from Linux's largest pid_max down
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid")


def test_bytes_and_text_round_trip_and_replace_whole(tmp_path):
    target = tmp_path / "data.bin"
    write_bytes_atomically(target, b"\x00first")
    assert target.read_bytes() == b"\x00first"
    write_bytes_atomically(target, b"second", fsync=False)
    assert target.read_bytes() == b"second"
    text = tmp_path / "notes.json"
    write_text_atomically(text, "{\"é\": \"ünïcode\"}\n")
    assert text.read_text(encoding="utf-8") == "{\"é\": \"ünïcode\"}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "notes.json"]  # no partial left


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="hash does not match"), atomic_file(target) as out:
        out.write(b"new bytes, half of them")
        raise ValueError("hash does not match")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_a_new_file_is_absent_until_the_block_ends(tmp_path):
    target = tmp_path / "model.gguf"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as out:
        out.write(b"GGUF")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_the_partial_file_is_hidden_beside_the_target_and_named_by_its_pid(tmp_path):
    target = tmp_path / "sub" / "CURRENT"
    target.parent.mkdir()
    target.write_text("build-1", encoding="utf-8")
    with atomic_file(target, "w") as out:
        out.write("build-2")
        partial = partial_path(target)
        assert partial.parent == target.parent and partial.name == f".CURRENT.partial-{os.getpid()}"
        assert partial.is_file() and target.read_text(encoding="utf-8") == "build-1"  # not yet in place
    assert target.read_text(encoding="utf-8") == "build-2" and not partial.exists()


def test_fsync_syncs_the_file_and_its_folder_only_when_asked(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    write_bytes_atomically(tmp_path / "a", b"x")
    assert len(synced) == 2  # the file, then the folder holding its new name
    write_bytes_atomically(tmp_path / "b", b"x", fsync=False)
    assert len(synced) == 2


def test_atomic_file_only_writes(tmp_path):
    with pytest.raises(ValueError, match="no 'w'"), atomic_file(tmp_path / "a", "rb"):
        pass


def test_stale_partials_of_dead_or_silent_writers_go_and_live_ones_stay(tmp_path):
    dead = partial_path(tmp_path / "m.gguf", unused_pid())
    live = partial_path(tmp_path / "k.state")  # this process: a write in progress
    silent = partial_path(tmp_path / "n.gguf")  # this pid, but unchanged for hours: its pid was reused
    old_style = tmp_path / f"o.gguf.partial-{unused_pid()}"  # as written before the hidden names
    folder = partial_path(tmp_path / "model", unused_pid())  # a killed extraction's folder
    kept = tmp_path / "m.gguf"
    for path in (dead, live, silent, old_style, kept):
        path.write_bytes(b"GGUF")
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    os.utime(silent, (time.time() - 7200,) * 2)
    remove_stale_partials(tmp_path)
    assert [p.exists() for p in (dead, live, silent, old_style, folder, kept)] == [
        False, True, False, False, False, True]


def test_remove_stale_partials_of_a_missing_folder_does_nothing(tmp_path):
    remove_stale_partials(Path(tmp_path / "absent"))
