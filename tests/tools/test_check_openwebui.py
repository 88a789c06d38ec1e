"""The pure parts of `make check-openwebui` (tools/check_openwebui.py): how it reads markers, rejected drafts,
Open WebUI's sources and follow-ups. The check itself runs Open WebUI and is not part of the suite."""

from __future__ import annotations

import pytest

from tools.check_openwebui import (
    Probe,
    _absent_words,
    _fragments,
    _marker_ids,
    _plain,
    _source_names,
    openwebui_env,
)

pytestmark = pytest.mark.unit


def test_plain_text_drops_markers_and_the_space_they_leave():
    assert _plain("909 billion won [1], [2]. And more [3][4]") == "909 billion won,. And more"
    assert _plain("909 billion won , .  And more") == "909 billion won,. And more"  # as the page shows it


def test_marker_ids_in_runs_and_lists():
    assert _marker_ids("a [1], b [2][5] and c [3, 4].") == [1, 2, 5, 3, 4]


def test_a_rejected_draft_is_known_by_its_words_between_markers():
    probe = Probe("q", "Samsung Electronics has 10,000 employees. [3]", "The articles do not say.", True, [])
    assert _fragments(probe.rejected_draft) == ["Samsung Electronics has 10,000 employees."]
    same = Probe("q", "It is 5 won [1].", "It is 5 won [1].", False, [])
    assert same.rejected_draft == "" and _fragments(same.rejected_draft) == []


def test_source_names_follow_open_webui_one_per_metadata_source():
    article = {"source": {"id": "a.txt", "name": "Title"}, "document": ["p1", "p2"],
               "metadata": [{"source": "a.txt", "name": "Title"}, {"source": "a.txt", "name": "Title"}]}
    per_passage = {"source": {"id": "a.txt"}, "document": ["p3"], "metadata": [{"source": "a.txt#3", "name": "T, 3"}]}
    assert _source_names([article]) == ["Title"]  # four passages of one article link one marker only
    assert _source_names([article, per_passage]) == ["Title", "T, 3"]


def test_absent_words_are_the_topic_words_no_article_holds():
    corpus = "Samsung Electronics and SK Hynix invest in chips."
    assert _absent_words("How many employees does Samsung Electronics have?", corpus) == {"employees"}
    assert _absent_words("What is the capital of France?", corpus) == {"capital", "france"}


def test_open_webui_starts_offline_on_the_rag_server_alone(tmp_path):
    env = openwebui_env("http://127.0.0.1:9", tmp_path, "none")
    assert env["OFFLINE_MODE"] == "true" and env["HF_HUB_OFFLINE"] == "1" and env["WEBUI_AUTH"] == "false"
    assert env["OPENAI_API_BASE_URL"] == "http://127.0.0.1:9/v1" and env["ENABLE_OLLAMA_API"] == "false"
    assert env["DATA_DIR"] == str(tmp_path) and env["RAG_EMBEDDING_MODEL"] == ""
