"""Saved generator states: a processed prompt prefix, kept in memory and in verified, atomically written files.

A state is what an engine holds after reading a prefix (llama.cpp's KV cache as its own state bytes), so a
prompt that starts with that prefix costs only its new tokens. Each state has a key that is the SHA-256 of
everything it depends on (the model file's hash, the engine and its version, the exact prefix text), so a
changed document, model or prompt gives a new key and an old state is never used for it.

File format (no pickle): a magic line, one line of JSON (key, tokens, payload size and SHA-256, label), then
the engine's state bytes. A file whose magic, key, size or hash does not match is deleted and recomputed.

A save writes `.<key>.state.partial-<pid>`, fsyncs it and renames it into place, so a process killed at any
moment leaves either the previous state file or the new one, never a part of one; the partial files of killed
writers are cleared after the next save (rag.files.remove_stale_partials: pid not running, or an hour old).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.files import atomic_file, remove_stale_partials

log = logging.getLogger(__name__)

MAGIC = b"RAG-GENERATOR-STATE 1\n"
SUFFIX = ".state"


@dataclass
class SavedState:
    key: str
    tokens: list[int]  # the prefix as the engine tokenized it
    data: bytes  # the engine's own state bytes
    label: str = ""  # what the prefix is (a document id), for people reading the folder


def state_key(**parts: Any) -> str:
    """The SHA-256 of everything a state depends on, given as keyword parts (order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class StateStore:
    """Recently used states in memory (any object), and byte states on disk under `folder`.

    `in_memory` bounds how many states stay in RAM (least recently used go first); `on_disk` bounds the
    files kept in `folder` (least recently used are deleted after a save).
    """

    def __init__(self, folder: Path, in_memory: int, on_disk: int) -> None:
        self.folder = folder
        self.in_memory = max(0, in_memory)
        self.on_disk = max(1, on_disk)
        self._memory: OrderedDict[str, Any] = OrderedDict()

    # ------------------------------------------------------------ memory

    def recall(self, key: str) -> Any | None:
        value = self._memory.get(key)
        if value is not None:
            self._memory.move_to_end(key)
        return value

    def remember(self, key: str, value: Any) -> None:
        if self.in_memory == 0:
            return
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.in_memory:
            self._memory.popitem(last=False)

    def forget(self) -> None:
        """Drop every state kept in RAM (saved files stay)."""
        self._memory.clear()

    # ------------------------------------------------------------ disk

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def save(self, state: SavedState) -> Path:
        """Write a state file atomically (a partial file, fsync, rename); prune the oldest files beyond `on_disk`
        and the partial files that killed writers left."""
        self.folder.mkdir(parents=True, exist_ok=True)
        header = {"key": state.key, "label": state.label, "tokens": state.tokens, "size": len(state.data),
                  "sha256": hashlib.sha256(state.data).hexdigest(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        target = self.path(state.key)
        with atomic_file(target) as out:
            out.write(MAGIC)
            out.write(json.dumps(header).encode("utf-8") + b"\n")
            out.write(state.data)
        self._prune()
        return target

    def load(self, key: str) -> SavedState | None:
        """The verified state of `key` from disk, or None (a damaged or foreign file is deleted)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            state = _read(path, key)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("saved generator state %s is unusable (%s); it will be recomputed", path, exc)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: pruned last
        return state

    def _prune(self) -> None:
        remove_stale_partials(self.folder)
        files = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[self.on_disk:]:
            old.unlink(missing_ok=True)


def _read(path: Path, key: str) -> SavedState:
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a saved generator state (wrong magic)")
        header = json.loads(handle.readline().decode("utf-8"))
        data = handle.read()
    if header["key"] != key:
        raise ValueError(f"saved for another prefix or model (key {str(header['key'])[:12]}…)")
    if len(data) != header["size"]:
        raise ValueError(f"truncated: {len(data)} of {header['size']} bytes")
    if hashlib.sha256(data).hexdigest() != header["sha256"]:
        raise ValueError("the state bytes do not match their SHA-256")
    tokens = header["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise ValueError("the token list is malformed")
    return SavedState(key, tokens, data, str(header.get("label", "")))
