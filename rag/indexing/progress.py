"""Progress of an indexing run: `Tracker` counts what the build does (documents read, chunks embedded) and tells a
callback where it stands (`rag.types.IndexProgress`), with the time left once enough has been embedded to say;
`ProgressLine` shows it to a person on a stream (`rag index`; the page shows it through Gradio's progress)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rag.types import IndexProgress, ProgressCallback

# The time left is told once the embedding rate rests on enough work: at least ETA_AFTER_BATCHES batches and either
# ETA_AFTER_S seconds of embedding or ETA_AFTER_SHARE of the chunks expected. Embedding is most of an indexing run's
# time, so the rate of chunks embedded per second since embedding began, reading and chunking the articles in
# between included, gives the rest. (Measured from the first batch's end instead, Ray's documents, which come a
# window at a time, would give a rate of thousands a second.)
ETA_AFTER_BATCHES = 2
ETA_AFTER_S = 5.0
ETA_AFTER_SHARE = 0.1
REDRAW_S = 0.1  # a terminal line is rewritten at most this often (a new stage at once)
PLAIN_EVERY_S = 10.0  # into a pipe or a file: a line at most this often, and one at the end
DIM, RESET, CLEAR_TO_END = "\x1b[2m", "\x1b[0m", "\x1b[K"


class Tracker:
    """Counts an indexing run's work and reports each step to `callback` (None: counted, told to no one).

    Documents are counted as they are read (an unreadable one too: it will have no chunks), chunks as each
    document is chunked (`chunked`) and as each batch is embedded (`embedded`). Until every readable document has
    been chunked, the chunks expected are those found so far plus, for each document not chunked yet, the mean
    number per document chunked so far."""

    def __init__(self, callback: ProgressCallback | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.callback = callback
        self.clock = clock
        self.started = clock()
        self.stage_name = "scanning"
        self.documents_total = 0
        self.read_count = 0
        self.unreadable = 0
        self.chunked_documents = 0
        self.chunks_known = 0  # chunks of the documents chunked so far
        self.chunks_done = 0  # embedded now, or taken from an interrupted run
        self.embedded_now = 0
        self.batches = 0
        self.embed_started: float | None = None
        self.line: ProgressLine | None = None  # the line `tracker_for` made for it, erased on leaving `with`

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.line is not None:
            self.line.close()

    def stage(self, name: str) -> None:
        self.stage_name = name
        if name == "embedding" and self.embed_started is None:
            self.embed_started = self.clock()
        self._tell()

    def plan(self, documents: int) -> None:
        """The run will read this many new or changed documents."""
        self.documents_total = documents

    def read(self, readable: bool = True) -> None:
        """A document was read (or could not be: it will have no chunks)."""
        self.read_count += 1
        self.unreadable += not readable
        self._tell()

    def chunked(self, chunks: int, done: bool = False) -> None:
        """A document's chunks are known; `done`: they need no embedding (taken from an interrupted run)."""
        self.chunked_documents += 1
        self.chunks_known += chunks
        if done:
            self.chunks_done += chunks
        self._tell()

    def embedded(self, chunks: int) -> None:
        """A batch of chunks was embedded."""
        self.chunks_done += chunks
        self.embedded_now += chunks
        self.batches += 1
        self._tell()

    def finish(self) -> None:
        self.stage("done")

    def snapshot(self) -> IndexProgress:
        now = self.clock()
        total, exact = self._chunks_expected()
        return IndexProgress(self.stage_name, self.read_count, self.documents_total, self.chunks_done, total, exact,
                             now - self.started, self._eta(now, total))

    def _chunks_expected(self) -> tuple[int, bool]:
        waiting = max(0, self.documents_total - self.unreadable - self.chunked_documents)
        if not waiting:
            return self.chunks_known, True
        if not self.chunked_documents:
            return 0, False
        return self.chunks_known + round(waiting * self.chunks_known / self.chunked_documents), False

    def _eta(self, now: float, total: int) -> float | None:
        """Seconds of embedding left at the rate so far; None until that rate rests on enough work."""
        if self.stage_name != "embedding" or self.embed_started is None or self.batches < ETA_AFTER_BATCHES:
            return None
        seconds = now - self.embed_started
        if seconds <= 0 or not self.embedded_now or (
                seconds < ETA_AFTER_S and self.embedded_now < ETA_AFTER_SHARE * total):
            return None
        return max(0, total - self.chunks_done) * seconds / self.embedded_now

    def _tell(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())


def tracker_for(progress: bool | ProgressCallback | Tracker) -> Tracker:
    """The tracker of a build: `progress` True shows a `ProgressLine` on stderr, False nothing, a callable is
    called with each step (a Tracker is used as it is)."""
    if isinstance(progress, Tracker):
        return progress
    if callable(progress):
        return Tracker(progress)
    line = ProgressLine() if progress else None
    tracker = Tracker(line)
    tracker.line = line
    return tracker


class ProgressLine:
    """Indexing progress on a stream (stderr unless told otherwise). On a terminal that can move its cursor (not
    TERM=dumb) one line rewritten in place, dimmed unless NO_COLOR is set, cut to the screen's width and erased at
    the end or on `close`; anywhere else (a pipe, a file, TERM=dumb) a plain line every `every_s` seconds and one
    at the end: never a carriage return or an escape code."""

    def __init__(self, out: TextIO | None = None, every_s: float = PLAIN_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out or sys.stderr
        self.every_s, self.clock = every_s, clock
        self.live = redraws(self.out)
        self.dim = self.live and not os.environ.get("NO_COLOR")  # no-color.org
        self.last = clock()
        self.stage = ""
        self.shown = False

    def __call__(self, update: IndexProgress) -> None:
        now = self.clock()
        new_stage, self.stage = update.stage != self.stage, update.stage
        if update.stage == "done":
            if self.live:
                self.close()  # the caller reports the run its own way
            else:
                self._print(update.describe())
            return
        if self.live and (new_stage or now - self.last >= REDRAW_S):
            width = max(10, shutil.get_terminal_size().columns) - 1  # the last column would wrap on some terminals
            line = update.describe()[:width]
            self.out.write("\r" + (DIM + line + RESET if self.dim else line) + CLEAR_TO_END)
            self.out.flush()
            self.last, self.shown = now, True
        elif not self.live and now - self.last >= self.every_s:
            self._print(update.describe())
            self.last = now

    def close(self) -> None:
        """Erase the line from a terminal (nothing to do elsewhere)."""
        if self.live and self.shown:
            self.out.write("\r" + CLEAR_TO_END)
            self.out.flush()
            self.shown = False

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def redraws(out: TextIO) -> bool:
    """Whether `out` is a terminal that can move its cursor (not TERM=dumb): where a line may be rewritten in place
    (this progress line, `rag ask`'s draft)."""
    try:
        terminal = out.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return terminal and os.environ.get("TERM") != "dumb"
