"""Housekeeping prompts of chat front-ends (Open WebUI's title, tags and follow-up tasks) get short JSON replies
made from the conversation; questions about the articles are never taken for one."""

from __future__ import annotations

import json

import pytest

from rag.server.housekeeping import housekeeping_reply, is_housekeeping
from tests.server.test_app import OPEN_WEBUI_TASKS, QUESTION

pytestmark = pytest.mark.unit


def test_open_webui_tasks_are_recognised_and_answered_in_json() -> None:
    replies = {key: json.loads(housekeeping_reply(prompt)) for key, prompt in OPEN_WEBUI_TASKS.items()}
    assert all(is_housekeeping(prompt) for prompt in OPEN_WEBUI_TASKS.values())
    assert replies["title"] == {"title": "South Korea invest AI semiconductor"}
    assert replies["tags"]["tags"][:2] == ["News", "South Korea"]
    assert len(replies["follow_ups"]["follow_ups"]) == 3
    assert all("South Korea" in q and q.endswith("?") for q in replies["follow_ups"]["follow_ups"])


def test_questions_are_not_housekeeping_and_unknown_tasks_get_an_empty_object() -> None:
    for question in (QUESTION, "What task did the ministry give? ### not a heading", "Title: the task force"):
        assert not is_housekeeping(question)
    assert json.loads(housekeeping_reply("### Task:\nRate this conversation from 1 to 10.")) == {}
    query = "### Task:\nGenerate search queries. JSON format: { \"queries\": [] }\n<chat_history>\nUSER: Who won?\n" \
            "</chat_history>"
    assert json.loads(housekeeping_reply(query)) == {"queries": ["Who won?"]}
