"""Short replies to the housekeeping prompts chat front-ends send (titles, tags, follow-ups), and the prompts a
front-end suggests before the first question, from what the articles cover.

Open WebUI, LibreChat and others ask the chat model itself for a title, tags and follow-up questions after an
answer, with prompts such as "### Task: Generate a concise, 3-5 word title ... JSON format: { "title": ... }
### Chat History: <chat_history> USER: ... ASSISTANT: ... </chat_history>". Sent through the articles, such a
prompt would be refused ("The articles do not say"). They are recognised by their "### Task:" heading and the JSON
key they ask for, and answered here without the generator and without a place in the queue. Titles and tags come
from the conversation's own words. Follow-ups come from the articles: the names, titles and dates of the passages
retrieval finds near the conversation (an embedding and a search, a few tens of milliseconds); after a refusal, or
when nothing relevant is indexed, they ask about the collection's newest articles instead, never about the topic
the articles lack. Anything else with a "### Task:" heading gets an empty JSON object.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

from rag.answering.flow import is_refusal
from rag.indexing.articles import list_articles
from rag.retrieval import get_retriever
from rag.settings import Settings
from rag.text import STOP_WORDS
from rag.types import ArticleInfo, Passage

TASK = re.compile(r"^\s*#{2,3}\s*Task\s*:", re.IGNORECASE | re.MULTILINE)
HISTORY = re.compile(r"<chat_history>(.*?)</chat_history>", re.DOTALL | re.IGNORECASE)
USER_TURN = re.compile(r"^\s*USER:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
TURN = re.compile(r"^\s*(USER|ASSISTANT):", re.MULTILINE | re.IGNORECASE)
# A name in an article: capitalised words, "of" or "de" only between two of them (never across a sentence).
PASSAGE_NAME = re.compile(r"\b[A-Z][\w&'’-]*(?:\s+(?:(?:of|de)\s+)?[A-Z][\w&'’-]*)*")
CALENDAR = {date(2024, month, 1).strftime("%B") for month in range(1, 13)} | {
    date(2024, 1, day).strftime("%A") for day in range(1, 8)}
LISTED = re.compile(r"[A-Z][\w'’-]*\s*(?:,|\band)\s*$")  # after "Science, " or "Japan and ": a list's item
SENTENCE_END = ".!?:;\n"  # what comes before a sentence's first word (opening quotes and brackets aside)
NAME = re.compile(r"\b[A-Z][\w&.'-]*(?:\s+(?:[A-Z][\w&.'-]*|of|and|de))*(?<![\s.])")
QUESTION_WORDS = {"how", "what", "when", "where", "who", "whom", "which", "why", "whose", "did", "does", "do", "is",
                  "are", "was", "were", "will", "can", "could", "should", "tell", "give", "list", "much", "many",
                  "a", "an", "in", "on", "at", "by", "of", "to", "me", "us"}
TITLE_WORDS = 5
FOLLOW_UPS = 3
SUGGESTIONS = 4  # prompts the model card offers before the first question
NAME_WORDS = 4  # a longer run of capitalised words is a heading, not a name
# The JSON key each known task asks for, in the order they are tested (a follow-up prompt also says "title").
KEYS = ("follow_ups", "tags", "title", "queries", "text")


def is_housekeeping(prompt: str) -> bool:
    """Whether a user message is a front-end's housekeeping task rather than a question about the articles."""
    return bool(TASK.search(prompt))


def housekeeping_reply(prompt: str, settings: Settings | None = None, corpus: Path | None = None) -> str:
    """The JSON reply to a housekeeping task: titles, tags and queries from the user's turns in its chat history,
    follow-ups from the articles near it (none without `settings`, i.e. before the models are loaded). Blocking: a
    follow-up task embeds the conversation and searches the index."""
    history = _history(prompt)
    questions = USER_TURN.findall(history) or [""]
    key = next((k for k in KEYS if f'"{k}"' in prompt), "")
    replies = {
        "title": lambda: {"title": _title(questions[0]) or "News question"},
        "tags": lambda: {"tags": ["News", *_names(" ".join(questions))[:2]]},
        "follow_ups": lambda: {"follow_ups": follow_ups(history, settings, corpus) if settings else []},
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


def follow_ups(history: str, settings: Settings, corpus: Path | None = None) -> list[str]:
    """Questions the articles answer, near the conversation: about the names in the passages retrieval finds for
    its last questions (those above the relevance floor), one of them dated by its article, and that article's
    title. After a refusal, or with nothing relevant indexed, questions about the newest articles instead."""
    turns = _turns(history)
    asked = [text for role, text in turns if role == "user"]
    answers = [text for role, text in turns if role == "assistant"]
    refused = bool(answers) and is_refusal(answers[-1], settings.refusal_text)
    nearby = [] if refused or not asked else _nearby(" ".join(asked[-2:]), settings, corpus)
    if not nearby:
        return [prompt["content"] for prompt in suggested_prompts(list_articles(settings, corpus))][:FOLLOW_UPS]
    return _from_passages(nearby, " ".join(asked))


def suggested_prompts(articles: list[ArticleInfo], count: int = SUGGESTIONS) -> list[dict[str, object]]:
    """Prompts about the newest articles, in the shape Open WebUI shows before the first question (a model's
    `meta.suggestion_prompts`: a title in two lines and the question it sends)."""
    newest = sorted(articles, key=lambda a: (a.published or a.date, a.doc_id), reverse=True)[:count]
    return [{"title": [_short(a.title), ", ".join(p for p in (_when(a.published), a.outlet) if p) or "in the articles"],
             "content": _about_article(a.title)} for a in newest if a.title.strip()]


def _turns(history: str) -> list[tuple[str, str]]:
    """The chat history's turns, each (role, text), a turn running to the next "USER:" or "ASSISTANT:" line."""
    marks = list(TURN.finditer(history))
    return [(mark.group(1).lower(), history[mark.end():following.start() if following else None].strip())
            for mark, following in zip(marks, [*marks[1:], None], strict=True)]


def _nearby(query: str, settings: Settings, corpus: Path | None) -> list[Passage]:
    """The passages retrieval finds for the conversation that pass the relevance floor (no generator)."""
    query = query.strip()[:settings.max_question_chars]
    if not query:
        return []
    retriever = get_retriever(settings, corpus)
    return [p for p in retriever.run(query, settings.top_k) if p.relevance >= retriever.calibration.min_relevance]


def _from_passages(nearby: list[Passage], asked: str) -> list[str]:
    """Questions about names in the passages (pairs that one sentence names together; one dated by the article of
    the best passage, when it names one and has a date) and one about that article; names the conversation has not
    asked about first, outlets left out. (Asked about one name alone, "What do the articles say about X?", the
    checks often refuse for want of a sentence about X as such; two names of one sentence have that sentence.)"""
    outlets = {p.outlet for p in nearby if p.outlet}
    said = asked.casefold()
    names = sorted((n for n in _passage_names(nearby) if n not in outlets), key=lambda n: n.casefold() in said)
    first = nearby[0]
    when = _when(first.published)
    dated = next((n for n in names if n in first.text), None) if when else None
    pairs = _named_together([n for n in names if n != dated], nearby)[:FOLLOW_UPS - 1 - bool(dated)]
    found = [f"What do the articles say about {a} and {b}?" for a, b in pairs]
    found += [f"What was reported about {dated} in {when}?"] if dated else []
    return [*found, _about_article(first.title)]


def _named_together(names: list[str], passages: list[Passage]) -> list[tuple[str, str]]:
    """Pairs of names that one sentence of the passages holds, the best-ranked first, no name in two pairs."""
    sentences = [s for p in passages for s in re.split(r"(?<=[.!?])\s+", p.text)]
    pairs: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            used = {n for pair in pairs for n in pair}
            if name in used:
                break
            if other not in used and other not in name and name not in other and any(
                    name in s and other in s for s in sentences):
                pairs.append((name, other))
                break
    return pairs


def _passage_names(passages: list[Passage]) -> list[str]:
    """Names in the passages, most frequent first: runs of capitalised words (at most NAME_WORDS), without the
    words that are capitalised only because they start a sentence ("During", "Last week") and without a final 's;
    a lone word that is part of a longer name ("Korean" of "South Korean") is left to that name, an adjective of a
    place named too ("South Korean") to the place, and a lone word listed after another capitalised one is left out."""
    runs = []
    for passage in passages:
        for match in PASSAGE_NAME.finditer(passage.text):
            before = passage.text[:match.start()]
            opening = before.rstrip().rstrip("\"“‘'([").rstrip()
            runs.append((match.group(0).split(), not opening or opening[-1] in SENTENCE_END,
                         LISTED.search(before[-80:]) is not None))
    inside = {word for words, starts, _ in runs for word in (words[1:] if starts else words)}
    counts: Counter[str] = Counter()
    for words, starts, listed in runs:
        if listed and len(words) == 1:
            continue  # "Technology" of "Ministry of Science, Technology, Information and Communications"
        while words and ((starts and words[0] not in inside) or words[0].lower() in QUESTION_WORDS | STOP_WORDS):
            words, starts = words[1:], False
        name = re.sub(r"['’]s$", "", " ".join(words))
        if len(name) > 2 and len(words) <= NAME_WORDS and name not in CALENDAR:
            counts[name] += 1
    parts = {word for name in counts if " " in name for word in name.split()}
    names = [name for name in counts if (" " in name or name not in parts) and not _derived(name, counts)]
    return sorted(names, key=lambda name: (-counts[name], -len(name.split())))


def _derived(name: str, names: Counter[str]) -> bool:
    """Whether a name is another one's adjective ("South Korean" of "South Korea", "Chinese" of "China")."""
    return any(other != name and len(other) > 3 and name.startswith(other[:-1]) and 0 < len(name) - len(other) <= 3
               and " " not in name[len(other) - 1:] for other in names)


def _about_article(title: str) -> str:
    return f"What does the article \"{title.strip().rstrip('.')}\" report?"


def _short(title: str, limit: int = 48) -> str:
    title = title.strip().rstrip(".")
    return title if len(title) <= limit else title[:limit - 1].rsplit(" ", 1)[0] + "…"


def _when(published: str) -> str:
    """A publication date as a month and year ("May 2024"), which a question's time phrase resolves to."""
    try:
        return date.fromisoformat(published).strftime("%B %Y")
    except ValueError:
        return ""


__all__ = ["follow_ups", "housekeeping_reply", "is_housekeeping", "suggested_prompts"]
