"""The `rag` command line: exit codes and messages for bad input, `rag index` summaries, `rag ask` (JSON, another
corpus, a pipe and a real terminal: the draft dimmed while it is checked, then only the checked answer) and the
generator states `rag index` saves."""

import io
import json
import re
import subprocess
import sys

import pyte
import pytest

from rag.cli import main
from rag.indexing.build import current_build
from tests.conftest import REPO, cache_with_models, child_env, write


@pytest.fixture
def env_settings(tmp_path, monkeypatch):
    """Point the CLI at a temporary corpus and index through the environment, as a user would."""
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", (REPO / "corpus" / "south-korea-ai-investment.txt").read_text(encoding="utf-8"))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(corpus))
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    return tmp_path


@pytest.mark.integration
def test_empty_question_exits_2_without_loading_a_model(env_settings):
    done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "  "], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert "error: the question is empty" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.unit
def test_unknown_model_exits_1_listing_known_names(env_settings, capsys):
    assert main(["ask", "How much?", "--model", "gpt-17"]) == 1
    err = capsys.readouterr().err
    assert "unknown generator 'gpt-17'" in err and "qwen2.5-coder-0.5b" in err


@pytest.mark.integration
def test_index_prints_a_summary_and_is_incremental(env_settings, capsys, monkeypatch):
    monkeypatch.setenv("RAG_INDEX_STATES", "false")  # no generator: the saved states have a test of their own
    assert main(["index"]) == 0
    assert "indexed 1 documents" in capsys.readouterr().out
    assert main(["index"]) == 0
    assert "index up to date: 1 documents" in capsys.readouterr().out
    (env_settings / "corpus" / "empty.txt").write_text("")
    assert main(["index"]) == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "empty.txt: no text" in captured.err


@pytest.mark.integration
def test_index_into_a_pipe_shows_progress_as_plain_lines(env_settings):
    """Into a pipe: no carriage return, no escape code, no model library's bar; the progress ends with its totals
    (a line every few seconds before that on a long run: tests/indexing/test_progress.py)."""
    env = child_env(RAG_CORPUS_DIR=str(env_settings / "corpus"), RAG_INDEX_DIR=str(env_settings / "index"),
                    RAG_INDEX_STATES="false", RAG_EMBED_BATCH_SIZE="4")
    done = subprocess.run([sys.executable, "-m", "rag.cli", "index"], capture_output=True, text=True, cwd=REPO,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    for output in (done.stdout, done.stderr):
        assert "\r" not in output and "\x1b" not in output
    chunks = int(re.search(r"indexed 1 documents, (\d+) chunks", done.stdout).group(1))
    assert re.search(rf"^Indexed {chunks} chunks · 1/1 docs in \d+s$", done.stderr, re.MULTILINE), done.stderr


@pytest.mark.unit
def test_index_of_an_empty_folder_is_bad_input(env_settings, capsys):
    (env_settings / "nothing").mkdir()
    assert main(["index", str(env_settings / "nothing")]) == 2
    assert "nothing to index" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.slow
def test_ask_json_has_the_documented_keys(env_settings, capsys):
    assert main(["ask", "How much will South Korea invest in daily AI for all people?", "--json", "--k", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"answer", "citations", "refused", "unsupported", "passages", "timings", "rewritten_question"}
    assert "909 billion won" in data["answer"] and len(data["passages"]) == 3


@pytest.mark.integration
@pytest.mark.slow
def test_ask_over_another_corpus_leaves_the_main_index_alone(env_settings, capsys):
    assert main(["index"]) == 0
    main_build = current_build(env_settings / "index")
    other = env_settings / "other"
    write(other / "bakery.txt", "Bakery news\nThe Mapo bakery sold 3,200 croissants on Sunday, its record.\n")
    assert main(["ask", "How many croissants did the Mapo bakery sell on Sunday?", "--corpus", str(other)]) == 0
    out = capsys.readouterr().out
    assert "3,200" in out and "Bakery news" in out
    assert current_build(env_settings / "index") == main_build
    assert list((env_settings / "index" / "corpora").iterdir())


@pytest.mark.integration
@pytest.mark.slow
def test_index_saves_the_generator_state_of_each_document(env_settings, capsys, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache_with_models(env_settings)))
    monkeypatch.setenv("RAG_GENERATOR", "qwen2.5-coder-0.5b")  # the state machinery is the same for every model
    assert main(["index"]) == 0
    assert "generator states of 1 document(s) ready" in capsys.readouterr().out
    assert len(list((env_settings / "cache" / "states").rglob("*.state"))) == 1
    (env_settings / "corpus" / "seed.txt").write_text("Changed\nThe article now says 42.\n", encoding="utf-8")
    assert main(["index"]) == 0
    assert "(1 computed)" in capsys.readouterr().out  # a changed document gets a new state


QUESTION = "When did Zuckerberg last visit South Korea?"
# The seed article does not give Samsung's workforce: the draft invents a figure and the checks refuse it.
REFUSED = "How many employees does Samsung Electronics have?"


class DimScreen(pyte.Screen):
    """A pyte terminal that also follows SGR 2 (dim), which pyte itself leaves out: `drawn` holds every text drawn,
    in order, with whether it was drawn dim."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.dim = False
        self.drawn: list[tuple[bool, str]] = []

    def select_graphic_rendition(self, *attrs: int, **kwargs) -> None:
        for attr in attrs or (0,):
            self.dim = True if attr == 2 else False if attr in (0, 22) else self.dim
        super().select_graphic_rendition(*attrs, **kwargs)

    def draw(self, data: str) -> None:
        self.drawn.append((self.dim, data))
        super().draw(data)

    def text(self, dim: bool) -> str:
        return "".join(data for flag, data in self.drawn if flag == dim)

    def shown(self) -> str:
        return "\n".join(line.rstrip() for line in self.display).strip()


def on_terminal(*args: str, columns: int = 100, lines: int = 40) -> tuple[bytes, DimScreen]:
    """Run `rag ask ARGS` on a real pseudo-terminal; what it wrote, replayed on a terminal emulator."""
    import os
    import pty

    screen = DimScreen(columns, lines)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": str(lines), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-m", "rag.cli", "ask", *args], stdout=follower,
                               stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    os.close(follower)
    written = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the other side closed
            break
        if not data:
            break
        written += data
    os.close(leader)
    assert process.wait(timeout=600) == 0
    pyte.ByteStream(screen).feed(written.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return written, screen


@pytest.mark.integration
@pytest.mark.slow
def test_ask_prints_one_answer_to_a_pipe(env_settings):
    done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", QUESTION], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r"2014 ?\[\d\]", done.stdout)) == 1 and done.stdout.count("Answer:") == 1
    assert done.stdout.startswith("Answer: ") and "\x1b[" not in done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_ask_on_a_terminal_streams_then_leaves_one_answer(env_settings):
    written, screen = on_terminal(QUESTION)
    shown = screen.shown()
    assert b"\x1b[J" in written  # the streamed draft was cleared...
    assert shown.count("Answer:") == 1 and len(re.findall(r"2014 ?\[\d\]", shown)) == 1  # ...one answer remains
    assert "Draft" not in shown and "checking" not in shown


@pytest.mark.integration
@pytest.mark.slow
def test_a_refused_draft_never_reaches_a_pipe(env_settings):
    from rag import answer
    from rag.settings import load_settings

    done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", REFUSED], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    checked = answer(REFUSED, settings=load_settings())  # the same settings, from the same environment
    assert checked.refused and checked.raw_text.strip() and checked.raw_text.strip() != checked.text, checked
    # the checked text, then the article's closest sentence and the time taken: nothing of the draft
    said = [line for line in done.stdout.splitlines() if not line.startswith(("  closest in the articles (", "("))]
    assert said == [f"Answer: {checked.text}"], done.stdout
    assert checked.raw_text.strip() not in done.stdout and "Draft" not in done.stdout and "\x1b[" not in done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_a_refused_draft_is_dimmed_on_a_terminal_then_replaced_by_the_refusal(env_settings):
    written, screen = on_terminal(REFUSED)
    from rag.cli import DRAFT_LABEL

    dimmed, plain = screen.text(dim=True), screen.text(dim=False)
    draft = dimmed.split(DRAFT_LABEL.strip(), 1)[-1].strip()
    assert dimmed.startswith(DRAFT_LABEL.strip()) and draft, screen.drawn  # the draft was shown, dimmed
    assert draft not in plain and "Draft" not in plain  # never undimmed
    shown = screen.shown()
    assert shown.startswith("Answer: The articles do not say.") and shown.count("Answer:") == 1, shown
    assert draft not in shown and "Draft" not in shown and "checking" not in shown, shown


@pytest.mark.unit
def test_the_draft_stays_within_the_screen_and_is_erased_to_the_row_it_began(monkeypatch):
    from rag.cli import DRAFT_LABEL, _Draft

    monkeypatch.setenv("COLUMNS", "24")
    monkeypatch.setenv("LINES", "6")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    out.write("$ rag ask\n")
    draft = _Draft(out)
    for piece in ["Samsung has ", "10,000\temployees [3].", "\n中文中文中文中文中文中", "\x1b[2J gone? ", "more " * 40]:
        draft.add(piece)
    screen = DimScreen(24, 6)
    stream = pyte.Stream(screen)
    stream.feed(out.getvalue().replace("\n", "\r\n"))
    assert screen.display[0].rstrip() == "$ rag ask"  # nothing scrolled off: the whole draft can be erased
    assert screen.text(dim=False) == "$ rag ask" and screen.text(dim=True).startswith(DRAFT_LABEL)
    assert "10,000 employees" in screen.shown() and screen.shown().endswith("…")  # cut at the screen's height
    assert "\x1b[2J" not in screen.text(dim=True)
    mark = len(out.getvalue())
    draft.erase()
    out.write("Answer: refused.\n")
    stream.feed(out.getvalue()[mark:].replace("\n", "\r\n"))
    assert screen.shown() == "$ rag ask\nAnswer: refused." and not screen.dim


@pytest.mark.unit
def test_a_refusal_prints_nothing_of_the_rejected_reply():
    from rag.cli import _render
    from rag.types import Answer

    invented = "Samsung Electronics has 10,000 employees."
    refused = Answer(REFUSED, "The articles do not say.", [], True, [], unsupported=[invented],
                     refusal_reason="unsupported", raw_text=invented + " [3]", timings={"total_s": 1.0})
    assert _render(refused).splitlines()[0] == "Answer: The articles do not say." and "10,000" not in _render(refused)


@pytest.mark.unit
def test_no_draft_shows_only_the_label(monkeypatch):
    from rag.cli import DRAFT_LABEL, _Draft

    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    draft = _Draft(out, show_text=False)
    draft.add("Samsung has 10,000 employees [3].")
    assert DRAFT_LABEL in out.getvalue() and "10,000" not in out.getvalue()
    draft.erase()
    assert out.getvalue().endswith("\x1b[0m\r\x1b[J")


# ---------------------------------------------------------------- dates, outlets, disagreements

DISAGREE = REPO / "tests" / "data" / "dated" / "disagree"
BRIDGE = "How much will the Harbor Bridge repairs in Norrport cost?"


@pytest.fixture
def disagree_corpus(tmp_path, monkeypatch):
    """The disagreeing bridge articles (and an unrelated one), copied to a temporary corpus the CLI points at."""
    import shutil

    corpus = tmp_path / "disagree"
    shutil.copytree(DISAGREE, corpus)
    monkeypatch.setenv("RAG_CORPUS_DIR", str(corpus))
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    return corpus


@pytest.mark.unit
@pytest.mark.parametrize(("option", "value", "said"), [
    ("--since", "garbage", "since: 'garbage' is not a date"),
    ("--until", "2024-13-45", "until: '2024-13-45' is not a date"),
    ("--as-of", "someday", "setting as_of: expected a date YYYY-MM-DD"),
])
def test_a_bad_date_exits_2_naming_the_option_without_loading_a_model(env_settings, capsys, option, value, said):
    assert main(["ask", BRIDGE, option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and "Traceback" not in err


@pytest.mark.unit
def test_since_after_until_exits_2(env_settings, capsys):
    assert main(["ask", BRIDGE, "--since", "2024-05-04", "--until", "2024-05-03"]) == 2
    assert "since (2024-05-04) is after until (2024-05-03)" in capsys.readouterr().err


@pytest.mark.unit
def test_the_printed_sources_show_outlet_date_copies_and_the_disagreement():
    from rag.cli import _render
    from rag.types import Answer, Citation, Passage

    def passage(n, doc_id, published, outlet, also_in=()):
        return Passage(n, doc_id, f"Story {n}", f"Repairs cost ${n + 8}.2 million.", 0, 30, (0, 0),
                       published=published, outlet=outlet, also_in=list(also_in))

    copy = {"doc_id": "echo.txt", "title": "Echo reprint", "published": "2024-05-04", "outlet": "Daily Echo"}
    ledger = passage(0, "ledger.md", "2024-05-02", "Coastal Ledger", [copy])
    undated = passage(1, "notes.txt", "", "")
    cites = [Citation(m, p.chunk_id, p.doc_id, p.title, p.text, 0, 30, p.text, 0.7, 1.0) for m, p in
             ((1, ledger), (2, undated))]
    groups = [{"value": "$8.2 million", "markers": [1], "sources": [{"published": "2024-05-02",
                                                                     "outlet": "Coastal Ledger"}]},
              {"value": "$9.2 million", "markers": [2], "sources": [{"published": "", "outlet": ""}]}]
    final = Answer(BRIDGE, "It costs $8.2 million [1]. The articles disagree: …", cites, False, [ledger, undated],
                   rewritten_question=BRIDGE, conflict=True, conflict_groups=groups,
                   dates={"since": "2024-05-01", "until": None, "latest": False, "phrase": "", "source": "request",
                          "applied": True})
    shown = _render(final)
    assert "  [1] Story 0 — Coastal Ledger, 2024-05-02\n" in shown and "  [2] Story 1 — date unknown\n" in shown
    assert "also in: 1 other article (Echo reprint)" in shown
    assert "The articles disagree (2 reports):\n  $8.2 million [1] (Coastal Ledger, 2024-05-02)\n" in shown
    assert "  $9.2 million [2] (date unknown)" in shown
    assert "(dates: published on or after 2024-05-01)" in shown


@pytest.mark.integration
@pytest.mark.slow
def test_ask_since_keeps_to_the_articles_published_from_that_day(disagree_corpus, capsys):
    assert main(["ask", BRIDGE, "--since", "2024-05-03", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {p["doc_id"] for p in data["passages"]} == {"wire-bridge.txt"}, data["passages"]
    assert all(p["published"] == "2024-05-03" and p["outlet"] == "Metro Wire" for p in data["passages"])
    assert data["dates"]["since"] == "2024-05-03" and data["dates"]["source"] == "request"
    assert "9.5 million" in data["answer"] and data["conflict"] is False
    assert {"conflict", "conflict_groups", "dates"} <= set(data)


@pytest.mark.integration
@pytest.mark.slow
def test_ask_prints_dated_sources_and_the_disagreement(disagree_corpus, capsys):
    assert main(["ask", BRIDGE]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\[\d\] .+ — (Coastal Ledger, 2024-05-02|Metro Wire, 2024-05-03)\n", out), out
    assert "The articles disagree (2 reports):" in out, out
    assert "8.2 million" in out and "9.5 million" in out
