"""Writing a file whole or not at all (a partial file, fsync, rename) and clearing killed writers' partial files."""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PARTIAL_MAX_AGE_S = 3600.0  # a partial file unchanged this long is abandoned, whatever its pid
_PARTIAL_PID = re.compile(r"\.partial-(\d+)")  # `.<name>.partial-<pid>`, and the `<name>.partial-<pid>` of before


def partial_path(path: Path, pid: int | None = None) -> Path:
    """Where process `pid` (default: this one) writes `path` before renaming it into place: `.<name>.partial-<pid>`
    beside it, in the same folder (a rename within one file system is atomic), hidden, and named by its writer so
    that remove_stale_partials can tell a live write from a killed one."""
    return path.with_name(f".{path.name}.partial-{os.getpid() if pid is None else pid}")


@contextmanager
def atomic_file(path: Path, mode: str = "wb", *, fsync: bool = True, encoding: str | None = "utf-8",
                ) -> Iterator[IO[Any]]:
    """An open partial file for `path`; on a clean exit of the block it is flushed, fsynced (with `fsync`) and
    renamed over `path`, then the folder is fsynced, so `path` holds the old bytes or all the new ones, never a
    part. Raise inside the block (a failed check, a hash that does not match) and the partial file is removed and
    `path` left as it was. `encoding` applies to text modes only.

    One process writes a given `path` from one thread at a time (the partial file's name is per process)."""
    if "w" not in mode:
        raise ValueError(f"atomic_file writes a new file: mode {mode!r} has no 'w'")
    path = Path(path)
    partial = partial_path(path)
    try:
        with open(partial, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_folder(path.parent)


def write_bytes_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` whole or not at all (see atomic_file); `fsync=False` where a torn file after a power
    loss is detected and redone anyway (a cache), not worth a sync per file."""
    with atomic_file(path, "wb", fsync=fsync) as out:
        out.write(data)


def write_text_atomically(path: Path, text: str, *, fsync: bool = True, encoding: str = "utf-8") -> None:
    """Write `text` to `path` whole or not at all (see atomic_file), as Path.write_text would write it."""
    with atomic_file(path, "w", fsync=fsync, encoding=encoding) as out:
        out.write(text)


def fsync_folder(folder: Path) -> None:
    """Make the entries of `folder` durable (a file renamed into it), where the platform can open a folder (POSIX);
    elsewhere, or on a file system that cannot sync a folder, it does nothing."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows: a folder cannot be opened (its renames are durable by other means)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def remove_stale_partials(folder: Path) -> None:
    """Clear the partial files and folders (`.<name>.partial-<pid>`, or `<name>.partial-<pid>` as written before)
    of writers that were killed; they are never used.

    A partial file is someone's write in progress while its process runs, so only abandoned ones go: the pid in
    the name is not running (on POSIX), or the file has not changed for PARTIAL_MAX_AGE_S (a pid reused since, or
    no way to ask). Removing a live writer's file would make its final rename fail.
    """
    if folder.is_dir():
        for leftover in folder.glob("*.partial-*"):  # pathlib's `*` matches hidden names too
            if not _abandoned(leftover):
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _abandoned(partial: Path) -> bool:
    match = _PARTIAL_PID.search(partial.name)
    try:
        age = time.time() - partial.lstat().st_mtime
    except FileNotFoundError:
        return False
    return match is None or age > PARTIAL_MAX_AGE_S or not _running(int(match.group(1)))


def _running(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would signal it there; the age limit clears leftovers instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
