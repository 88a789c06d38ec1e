"""Servers the tools start and wait for: a free loopback port, and waiting until a server's health URL answers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None, log: Path | None, what: str, timeout_s: float,
                 interval_s: float = 1.0) -> None:
    """Waits until `url` answers 200; raises RuntimeError with the log's tail when the process exits, TimeoutError
    when `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=10).status_code == 200:
                return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} did not become ready in {timeout_s:g} s:\n{log_tail(log)}")


def log_tail(log: Path | None, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""
