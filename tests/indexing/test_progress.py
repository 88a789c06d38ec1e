"""Indexing progress (rag/indexing/progress.py): what a real build tells its callback (counts that only grow and end
at the totals, the time left once enough is embedded), the time left from a given clock, and the line a person sees
on a terminal (rewritten in place, dimmed unless NO_COLOR) or in a pipe (plain lines, no carriage return)."""

import io
import re

import pytest

from rag.indexing.build import build_index
from rag.indexing.progress import ETA_AFTER_S, ETA_AFTER_SHARE, PLAIN_EVERY_S, ProgressLine, Tracker
from rag.types import IndexProgress
from tests.conftest import SEED_ARTICLE, write


class Clock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.integration
def test_a_build_tells_counts_that_grow_to_the_totals_and_the_time_left(tmp_settings):
    settings = tmp_settings.replace(embed_batch_size=2)  # several batches from a few short articles
    paragraphs = SEED_ARTICLE.read_text(encoding="utf-8").split("\n\n")
    for n in range(6):
        write(settings.corpus_dir / f"part{n}.txt", f"Part {n}\n\n" + "\n\n".join(paragraphs[n:n + 3]))
    write(settings.corpus_dir / "empty.txt", " \n")  # read, unreadable: counted, with no chunks
    seen: list[IndexProgress] = []
    report = build_index([settings.corpus_dir], settings.index_dir, settings, progress=seen.append)

    stages = [u.stage for u in seen]
    assert stages[0] == "scanning" and stages[-2:] == ["writing", "done"]
    assert [s for i, s in enumerate(stages) if s not in stages[:i]] == ["scanning", "loading", "embedding",
                                                                         "writing", "done"]
    working = [u for u in seen if u.stage != "scanning"]
    for earlier, later in zip(working, working[1:], strict=False):
        assert later.documents_done >= earlier.documents_done and later.chunks_done >= earlier.chunks_done
        assert later.elapsed_s >= earlier.elapsed_s
    assert all(u.documents_total == 7 and u.chunks_done <= u.chunks_total for u in working if u.chunks_total)
    last = seen[-1]
    assert (last.documents_done, last.documents_total) == (7, 7)
    assert last.chunks_exact and last.chunks_done == last.chunks_total == report.embedded_chunks == report.chunks
    assert report.embedded_chunks > 4 * settings.embed_batch_size
    embedding = [u for u in seen if u.stage == "embedding"]
    assert any(not u.chunks_exact for u in embedding)  # an estimate while articles were still to be read
    timed = [u for u in embedding if u.eta_s is not None]
    assert timed and all(u.eta_s >= 0 for u in timed)  # told once two batches were embedded
    assert embedding[-1].eta_s == 0 and embedding[-1].describe().endswith("· 0s left")
    assert re.fullmatch(r"Embedding \d+/~?\d+ chunks · \d/7 docs · \d+(m\d\d)?s left", timed[0].describe())
    assert re.fullmatch(rf"Indexed {report.chunks} chunks · 7/7 docs in \d+s", last.describe())


@pytest.mark.unit
def test_the_time_left_waits_for_enough_work_and_follows_the_rate():
    clock, seen = Clock(), []
    tracker = Tracker(seen.append, clock=clock)
    tracker.plan(10)
    tracker.stage("embedding")
    for _ in range(4):  # four of ten documents read, 5 chunks each: 50 chunks expected
        tracker.read()
        tracker.chunked(5)
    tracker.read(readable=False)  # one of the six left cannot be read: 5 left to chunk, 45 chunks expected
    assert (seen[-1].chunks_total, seen[-1].chunks_exact, seen[-1].fraction) == (45, False, 0.0)
    clock.now += 2
    tracker.embedded(2)
    assert seen[-1].eta_s is None  # one batch says nothing yet
    clock.now += 2
    tracker.embedded(2)  # two batches, but in 4 s and 4 of 45 chunks: not enough yet
    assert seen[-1].eta_s is None and ETA_AFTER_S > 4 and ETA_AFTER_SHARE * 45 > 4
    clock.now += 2
    tracker.embedded(2)  # 6 chunks in 6 s: 1 a second, 39 to go
    assert seen[-1].eta_s == pytest.approx(39)
    assert seen[-1].describe() == "Embedding 6/~45 chunks · 5/10 docs · 39s left"
    for _ in range(5):
        tracker.read()
        tracker.chunked(6)
    assert (seen[-1].chunks_total, seen[-1].chunks_exact) == (50, True)
    assert seen[-1].describe() == "Embedding 6/50 chunks · 10/10 docs · 44s left"
    tracker.stage("writing")
    assert seen[-1].eta_s is None and seen[-1].fraction == 1.0


@pytest.mark.unit
def test_a_pipe_gets_plain_lines_now_and_then_and_one_at_the_end(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    clock, out = Clock(), io.StringIO()
    line = ProgressLine(out, clock=clock)
    for n in range(30):
        clock.now += 1
        line(IndexProgress("embedding", n // 3, 10, n, 30, True, float(n)))
    line(IndexProgress("done", 10, 10, 30, 30, True, 31.0))
    lines = out.getvalue().splitlines()
    assert len(lines) == int(30 // PLAIN_EVERY_S) + 1 and lines[-1] == "Indexed 30 chunks · 10/10 docs in 31s"
    assert lines[0].startswith("Embedding 9/30 chunks · 3/10 docs")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


@pytest.mark.unit
@pytest.mark.parametrize(("variable", "value"), [("NO_COLOR", "1"), ("TERM", "dumb"), ("", "")])
def test_a_terminal_gets_one_line_rewritten_then_erased(monkeypatch, variable, value):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "40")
    if variable:
        monkeypatch.setenv(variable, value)
    clock, out = Clock(), Terminal()
    with ProgressLine(out, clock=clock) as line:
        line(IndexProgress("loading", 0, 181))
        for n in range(1, 4):
            clock.now += 1
            line(IndexProgress("embedding", 38, 181, 300 * n, 1005, False, float(n), 72.0))
        clock.now += 0.01
        line(IndexProgress("embedding", 39, 181, 1300, 1005, False, 3.0))  # within REDRAW_S: not drawn
    text = out.getvalue()
    if variable == "TERM":  # cannot move the cursor: plain lines, as in a pipe
        assert "\r" not in text and "\x1b" not in text
        return
    assert text.count("\r") == 5 and text.endswith("\r\x1b[K") and "1,300" not in text
    assert ("\x1b[2m" in text) == (variable != "NO_COLOR")
    drawn = [re.sub(r"\x1b\[\d*[mK]", "", part) for part in text.split("\r") if part]
    assert drawn[-2] == "Embedding 900/~1,005 chunks · 38/181 do"  # cut to the screen's width less one column
    assert all(len(part) <= 39 for part in drawn)
