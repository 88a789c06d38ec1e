"""Housekeeping prompts of chat front-ends (Open WebUI's title, tags and follow-up tasks) get short JSON replies:
titles and tags from the conversation, follow-ups from what the indexed articles cover near it (real indexes, the
test embedder); questions about the articles are never taken for one."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from rag import answer
from rag.indexing.articles import list_articles
from rag.server.housekeeping import _passage_names, follow_ups, housekeeping_reply, is_housekeeping, suggested_prompts
from rag.settings import Settings
from rag.types import ArticleInfo, Passage
from tests.conftest import REPO, SEED_ARTICLE, make_settings
from tests.server.test_app import OPEN_WEBUI_TASKS, QUESTION

SEED_TEXT = SEED_ARTICLE.read_text(encoding="utf-8")
SEED_TITLE = SEED_TEXT.splitlines()[0].rstrip(".")
OFF_TOPIC = "What is the capital of France?"
# What a suggestion names: "about <name> and <name>", "about <name> in <Month year>", or "the article "<title>"".
NAMED = re.compile(r"about (.+?)(?: in [A-Z][a-z]+ \d{4})?\?$|the article \"(.+)\" report\?$")


def named(suggestion: str) -> list[str]:
    found = NAMED.search(suggestion)
    assert found, suggestion
    return found.group(1).split(" and ") if found.group(1) else [found.group(2)]


def chat(*turns: str) -> str:
    """An Open WebUI chat history: USER and ASSISTANT turns in turn."""
    return "\n".join(f"{'USER' if i % 2 == 0 else 'ASSISTANT'}: {text}" for i, text in enumerate(turns))


@pytest.mark.unit
def test_open_webui_tasks_are_recognised_and_answered_in_json() -> None:
    replies = {key: json.loads(housekeeping_reply(prompt)) for key, prompt in OPEN_WEBUI_TASKS.items()}
    assert all(is_housekeeping(prompt) for prompt in OPEN_WEBUI_TASKS.values())
    assert replies["title"] == {"title": "South Korea invest AI semiconductor"}
    assert replies["tags"]["tags"][:2] == ["News", "South Korea"]
    assert replies["follow_ups"] == {"follow_ups": []}  # no settings: the models are not loaded, nothing to offer


@pytest.mark.unit
def test_names_in_articles_leave_out_words_capitalised_only_at_a_sentence_start() -> None:
    text = ("Last week, Mark Zuckerberg visited Seoul. During his stay in South Korea, he met Samsung Electronics. "
            "In June, Zuckerberg said the South Korean market matters, says \"Digital Strategy\".")
    names = _passage_names([Passage(0, "a.txt", "A", text, 0, len(text), (0, 0))])
    assert names[0] == "Mark Zuckerberg"  # "Zuckerberg" alone is left to the longer name
    assert {"South Korea", "Samsung Electronics", "Seoul", "Digital Strategy"} <= set(names)
    assert not {"Last", "During", "In June", "June", "In", "Korean", "Zuckerberg", "Strategy"} & set(names)


@pytest.mark.unit
def test_suggested_prompts_ask_about_the_newest_articles() -> None:
    articles = [ArticleInfo("old.md", "Old news.", "2023-01-01", 1, "2023-01-01", "Daily Echo"),
                ArticleInfo("new.md", "Harbor Bridge repairs to cost $8.2 million", "2024-05-02", 2, "2024-05-02",
                            "Coastal Ledger"),
                ArticleInfo("undated.txt", "Undated report", "2024-01-09", 1)]
    prompts = suggested_prompts(articles, count=2)
    assert [p["content"] for p in prompts] == [
        'What does the article "Harbor Bridge repairs to cost $8.2 million" report?',
        'What does the article "Undated report" report?']
    assert prompts[0]["title"] == ["Harbor Bridge repairs to cost $8.2 million", "May 2024, Coastal Ledger"]
    assert prompts[1]["title"][1] == "in the articles"


@pytest.mark.integration
def test_follow_ups_name_what_the_articles_near_the_question_cover(seed_settings: Settings) -> None:
    history = chat(QUESTION, "South Korea will invest 1.02 trillion won by 2027 [1].")
    found = follow_ups(history, seed_settings)
    assert len(found) == 3 and all(q.endswith("?") for q in found), found
    names = [name for q in found for name in named(q)]
    assert all(name in SEED_TEXT for name in names), found  # each names what the article holds
    assert any(name not in QUESTION for name in names), found  # and not only the question's own words
    assert found[-1] == f'What does the article "{SEED_TITLE}" report?'
    reply = json.loads(housekeeping_reply(OPEN_WEBUI_TASKS["follow_ups"], seed_settings))
    assert reply["follow_ups"] and all(name in SEED_TEXT for q in reply["follow_ups"] for name in named(q)), reply


@pytest.mark.integration
@pytest.mark.slow
def test_after_a_refusal_no_follow_up_names_the_topic_the_articles_lack(seed_settings: Settings) -> None:
    refused = answer(OFF_TOPIC, settings=seed_settings)
    assert refused.refused, refused.text
    for history in (chat(OFF_TOPIC, refused.text), chat(OFF_TOPIC),  # refused; or nothing relevant indexed
                    chat("How many employees does Samsung Electronics have?", seed_settings.refusal_text)):
        found = follow_ups(history, seed_settings)
        assert found == [f'What does the article "{SEED_TITLE}" report?'], (history, found)
        assert not any(word in q for q in found for word in ("France", "capital", "employees", "Samsung"))


@pytest.mark.integration
def test_a_follow_up_is_dated_by_its_article(tmp_path: Path) -> None:
    shutil.copytree(REPO / "tests" / "data" / "dated" / "disagree", tmp_path / "corpus")
    settings = make_settings(tmp_path)
    found = follow_ups(chat("How much will the Harbor Bridge repairs in Norrport cost?"), settings)
    assert any(re.search(r" in May 2024\?$", q) for q in found), found
    assert any("Harbor Bridge" in q or "Norrport" in q for q in found), found
    titles = [p["title"][0] for p in suggested_prompts(list_articles(settings))]
    assert titles[0].startswith("Norrport bridge repair bill") and len(titles) == 3  # the newest first


@pytest.mark.unit
def test_questions_are_not_housekeeping_and_unknown_tasks_get_an_empty_object() -> None:
    for question in (QUESTION, "What task did the ministry give? ### not a heading", "Title: the task force"):
        assert not is_housekeeping(question)
    assert json.loads(housekeeping_reply("### Task:\nRate this conversation from 1 to 10.")) == {}
    query = "### Task:\nGenerate search queries. JSON format: { \"queries\": [] }\n<chat_history>\nUSER: Who won?\n" \
            "</chat_history>"
    assert json.loads(housekeeping_reply(query)) == {"queries": ["Who won?"]}
