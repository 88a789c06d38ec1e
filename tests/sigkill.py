"""Crash tests' helper: a child Python process that writes, and the parent that SIGKILLs it at chosen moments.

Parent side: `Child` starts `python -m tests.sigkill <job> ...` and reads its progress lines; `kill()` sends SIGKILL
and reaps it. Child side (`main`): the `states` job saves generator states (`payload` gives their bytes, so the
parent can recompute them), the `gguf` job runs `ensure_gguf` on fake part packages, the `corpus` job uploads or
deletes an article as the chat page does. With a pause point the child
stops at that exact moment of a write, prints `paused <point>` and waits to be killed; the pauses wrap `open`
(in the module that writes: rag.files for states and models), `os.fsync` and `os.replace` in the child only, so
the product code runs unchanged:

- `write:N`  the N-th large write (1 MiB or more) into a file opened for writing: half of it is written and flushed
- `fsync:N`  the N-th fsync, before it (everything written, nothing synced)
- `replace:N`  the N-th os.replace, after it (the file is in place; what follows the rename has not run)
- `rename:N`  the N-th os.rename, after it
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
LARGE = 1 << 20
STATE_KEYS = ("k0", "k1", "k2")


def payload(key: str, round_: int, size: int) -> bytes:
    """The state bytes the child saves for `key` in `round_`: deterministic, incompressible."""
    return hashlib.shake_256(f"{key}:{round_}".encode()).digest(size)


# ---------------------------------------------------------------- parent side


class Child:
    """A `python -m tests.sigkill` process whose stdout lines arrive on a queue (read by a thread)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.sigkill", *args], cwd=REPO, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._ended = False  # its stdout has closed
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next(self, timeout: float) -> str | None:
        line = None if self._ended else self._queue.get(timeout=timeout)
        if line is None:
            self._ended = True
        else:
            self.lines.append(line)
        return line

    def wait_for(self, prefix: str, timeout: float = 20.0) -> str:
        """The next line starting with `prefix` (every line read is kept in `lines`)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._next(left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"child ended before {prefix!r}: {self.stderr()}")
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} from the child within {timeout} s")

    def kill(self) -> bool:
        """SIGKILL the child (if still running) and reap it; True when it was killed, False when it had ended.

        All it printed before dying is then in `lines`; a reaped child's pid no longer runs.
        """
        running = self.process.poll() is None
        if running:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=20)
        while self._next(20) is not None:
            pass
        return running

    def stderr(self) -> str:
        self.process.wait(timeout=20)
        assert self.process.stderr is not None
        return self.process.stderr.read()[-2000:]

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def kill_after(child: Child, point: str, delay: float) -> bool:
    """Kill `child` at its pause point, or (point "none") `delay` seconds after it said `ready`."""
    if point == "none":
        child.wait_for("ready")
        time.sleep(delay)
    else:
        child.wait_for(f"paused {point}")
    return child.kill()


# ---------------------------------------------------------------- child side


def _stop_here(point: str) -> None:
    print(f"paused {point}", flush=True)
    time.sleep(600)
    raise SystemExit("not killed")


class _PausingFile:
    """A file opened for writing that stops in the middle of the chosen large write."""

    def __init__(self, handle: IO[bytes], counter: list[int], point: str) -> None:
        self._handle, self._counter, self._point = handle, counter, point

    def write(self, data: bytes) -> int:
        if len(data) >= LARGE:
            self._counter[0] -= 1
            if self._counter[0] == 0:
                self._handle.write(data[:len(data) // 2])
                self._handle.flush()
                _stop_here(self._point)
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _PausingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def install_pause(point: str, module: Any) -> None:
    """Make this process stop at `point` (see the module docstring) while `module` writes."""
    if point == "none":
        return
    name, _, count = point.partition(":")
    counter = [int(count or 1)]
    if name == "write":
        def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
            return _PausingFile(handle, counter, point) if "w" in mode else handle

        module.open = opener
        return
    real = {"fsync": os.fsync, "replace": os.replace, "rename": os.rename}[name]

    def pausing(*args: Any) -> Any:
        counter[0] -= 1
        if name == "fsync" and counter[0] == 0:
            _stop_here(point)
        result = real(*args)
        if name in ("replace", "rename") and counter[0] == 0:
            _stop_here(point)
        return result

    setattr(os, name, pausing)


def save_states(folder: str, point: str, first_round: str, size: str) -> None:
    """Save states under STATE_KEYS round after round, saying `saving`/`saved <key> <round>` around each."""
    import rag.files
    from rag.generators.states import SavedState, StateStore

    store = StateStore(Path(folder), in_memory=0, on_disk=len(STATE_KEYS) + 1)
    install_pause(point, rag.files)
    print("ready", flush=True)
    for round_ in range(int(first_round), int(first_round) + 1000):
        for key in STATE_KEYS:
            data = payload(key, round_, int(size))
            print(f"saving {key} {round_}", flush=True)
            store.save(SavedState(key, [round_], data, label=f"{key}@{round_}"))
            print(f"saved {key} {round_}", flush=True)


def assemble_gguf(site: str, cache_dir: str, spec_json: str, point: str) -> None:
    """Prepare the fake packaged GGUF described by `spec_json` from the part packages under `site`."""
    sys.path.insert(0, site)
    import rag.files
    import rag.models.assembly
    from rag.settings import Settings

    spec = rag.models.registry.PackagedGGUF(**json.loads(spec_json))
    install_pause(point, rag.files)
    print("ready", flush=True)
    path = rag.models.assembly.ensure_gguf(spec, Settings(cache_dir=Path(cache_dir)), progress=False)
    print(f"done {path}", flush=True)


def change_corpus(root: str, action: str, target: str, point: str) -> None:
    """Upload the file `target` into <root>/corpus (action "add") or delete the article `target` ("remove"),
    indexing into <root>/index, as the chat page does."""
    import rag.indexing.articles
    from rag.settings import load_settings

    settings = load_settings(config_file=None, corpus_dir=Path(root) / "corpus", index_dir=Path(root) / "index")
    install_pause(point, rag.indexing.articles)
    print("ready", flush=True)
    if action == "add":
        report = rag.indexing.articles.add_articles([Path(target)], settings)
    else:
        report = rag.indexing.articles.remove_articles([target], settings)
    print(f"done {report.summary()}", flush=True)


def main() -> None:
    job, *args = sys.argv[1:]
    {"states": save_states, "gguf": assemble_gguf, "corpus": change_corpus}[job](*args)


if __name__ == "__main__":
    main()
