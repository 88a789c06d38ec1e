"""Short replies to the housekeeping prompts chat front-ends send (titles, tags, follow-ups), without the articles.

Open WebUI, LibreChat and others ask the chat model itself for a title, tags and follow-up questions after an
answer, with prompts such as "### Task: Generate a concise, 3-5 word title ... JSON format: { "title": ... }
### Chat History: <chat_history> USER: ... ASSISTANT: ... </chat_history>". Sent through the articles, such a
prompt would be refused ("The articles do not say"). They are recognised by their "### Task:" heading and the JSON
key they ask for, and answered here from the conversation's own words: deterministic, instant, no model and no
place in the queue. Anything else with a "### Task:" heading gets an empty JSON object.
"""

from __future__ import annotations

import json
import re

from rag.text import STOP_WORDS

TASK = re.compile(r"^\s*#{2,3}\s*Task\s*:", re.IGNORECASE | re.MULTILINE)
HISTORY = re.compile(r"<chat_history>(.*?)</chat_history>", re.DOTALL | re.IGNORECASE)
USER_TURN = re.compile(r"^\s*USER:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
NAME = re.compile(r"\b[A-Z][\w&.'-]*(?:\s+(?:[A-Z][\w&.'-]*|of|and|de))*(?<![\s.])")
QUESTION_WORDS = {"how", "what", "when", "where", "who", "whom", "which", "why", "whose", "did", "does", "do", "is",
                  "are", "was", "were", "will", "can", "could", "should", "tell", "give", "list", "much", "many",
                  "a", "an", "in", "on", "at", "by", "of", "to", "me", "us"}
TITLE_WORDS = 5
# The JSON key each known task asks for, in the order they are tested (a follow-up prompt also says "title").
KEYS = ("follow_ups", "tags", "title", "queries", "text")


def is_housekeeping(prompt: str) -> bool:
    """Whether a user message is a front-end's housekeeping task rather than a question about the articles."""
    return bool(TASK.search(prompt))


def housekeeping_reply(prompt: str) -> str:
    """The JSON reply to a housekeeping task, made from the user's turns in its chat history."""
    questions = USER_TURN.findall(_history(prompt)) or [""]
    key = next((k for k in KEYS if f'"{k}"' in prompt), "")
    topic = _topic(questions)
    replies = {
        "title": lambda: {"title": _title(questions[0]) or "News question"},
        "tags": lambda: {"tags": ["News", *_names(" ".join(questions))[:2]]},
        "follow_ups": lambda: {"follow_ups": _follow_ups(topic)},
        "queries": lambda: {"queries": [questions[-1]] if questions[-1] else []},
        "text": lambda: {"text": ""},  # autocompletion of what the user types: nothing to add
    }
    return json.dumps(replies[key]() if key else {}, ensure_ascii=False)


def _history(prompt: str) -> str:
    found = HISTORY.search(prompt)
    return found.group(1) if found else prompt


def _content_words(text: str) -> list[str]:
    words = re.findall(r"[\w&.'-]+", text)
    return [w.strip(".") for w in words if w.lower() not in STOP_WORDS | QUESTION_WORDS and w.strip(".")]


def _title(question: str) -> str:
    title = " ".join(_content_words(question)[:TITLE_WORDS])
    return title[:1].upper() + title[1:]


def _names(text: str) -> list[str]:
    """Capitalised names in order of appearance, without question words at a sentence start ("How", "Who")."""
    found: list[str] = []
    for match in NAME.finditer(text):
        words = match.group(0).split()
        while words and words[0].lower() in QUESTION_WORDS | STOP_WORDS:
            words = words[1:]
        name = " ".join(words)
        if name and name not in found:
            found.append(name)
    return found


def _topic(questions: list[str]) -> str:
    names = _names(" ".join(questions))
    return names[0] if names else (_title(questions[0]) or "this")


def _follow_ups(topic: str) -> list[str]:
    return [f"What else do the articles say about {topic}?",
            f"Which figures do the articles give about {topic}?",
            f"Who else is involved with {topic}, according to the articles?"]


__all__ = ["housekeeping_reply", "is_housekeeping"]
