import json
import subprocess
import sys

import pytest

from rag.cli import main
from rag.index import current_build
from tests.conftest import REPO, write


@pytest.fixture
def env_settings(tmp_path, monkeypatch):
    """Point the CLI at a temporary corpus and index through the environment, as a user would."""
    corpus = tmp_path / "corpus"
    write(corpus / "seed.txt", (REPO / "corpus" / "south-korea-ai-investment.txt").read_text(encoding="utf-8"))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(corpus))
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    return tmp_path


def test_empty_question_exits_2_without_loading_a_model(env_settings):
    done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "  "], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert "error: the question is empty" in done.stderr and "Traceback" not in done.stderr


def test_unknown_model_exits_1_listing_known_names(env_settings, capsys):
    assert main(["ask", "How much?", "--model", "gpt-17"]) == 1
    err = capsys.readouterr().err
    assert "unknown generator 'gpt-17'" in err and "qwen2.5-coder-0.5b" in err


def test_index_prints_a_summary_and_is_incremental(env_settings, capsys):
    assert main(["index"]) == 0
    assert "indexed 1 documents" in capsys.readouterr().out
    assert main(["index"]) == 0
    assert "index up to date: 1 documents" in capsys.readouterr().out
    (env_settings / "corpus" / "empty.txt").write_text("")
    assert main(["index"]) == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "empty.txt: no text" in captured.err


def test_index_of_an_empty_folder_is_bad_input(env_settings, capsys):
    (env_settings / "nothing").mkdir()
    assert main(["index", str(env_settings / "nothing")]) == 2
    assert "nothing to index" in capsys.readouterr().err


@pytest.mark.slow
def test_ask_json_has_the_documented_keys(env_settings, capsys):
    assert main(["ask", "How much will South Korea invest in daily AI for all people?", "--json", "--k", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"answer", "citations", "refused", "unsupported", "passages", "timings", "rewritten_question"}
    assert "909 billion won" in data["answer"] and len(data["passages"]) == 3


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
