"""The `rag` command line: exit codes and messages for bad input, `rag index` summaries, `rag ask` (JSON, another
corpus, a pipe and a real terminal) and the generator states `rag index` saves."""

import json
import re
import subprocess
import sys

import pytest

from rag.cli import main
from rag.indexing.build import current_build
from tests.conftest import REPO, cache_with_models, write


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
    """Run `rag ask` on a real pseudo-terminal and replay what it wrote on a terminal emulator."""
    import os
    import pty

    import pyte

    screen = pyte.Screen(100, 40)
    stream = pyte.ByteStream(screen)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40"}
    process = subprocess.Popen([sys.executable, "-m", "rag.cli", "ask", QUESTION], stdout=follower,
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
    assert process.wait(timeout=600) == 0
    stream.feed(written.replace(b"\n", b"\r\n"))
    shown = "\n".join(line.rstrip() for line in screen.display)
    assert b"\x1b[J" in written  # the streamed reply was cleared...
    assert shown.count("Answer:") == 1 and len(re.findall(r"2014 ?\[\d\]", shown)) == 1  # ...one answer remains


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
