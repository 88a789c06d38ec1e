"""Saying when the articles disagree: another article's passage that gives a different value for what was asked.

After an answer passes its checks, each passage of another article that does not hold the answer's figures and
names, yet covers the question as well as the cited one, is asked for its own answer ("from passage [n] only"),
after the same kept passages: a few tokens each, never a second reading. When that reply is grounded in its
passage and shares no figure or name with the cited passage's own reply, the answer says so, with both
citations and dates: "The articles disagree: $8.2 million [1] (2024-05-02, Coastal Ledger); $9.5 million [2]
(2024-05-03, Metro Wire)." When the question asks for the latest and the reports are dated apart, the newest leads
("The newest report gives ...; an earlier one gave ..."). A whole document read alone is one report: never asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.answering.citations import supporting_span
from rag.answering.prompts import Context, build_prompt
from rag.calibration import STATEMENT_COVERAGE
from rag.dates import TimeScope, without_time_words
from rag.generators.base import Generator, complete
from rag.settings import Settings
from rag.text import STOP_WORDS, key_terms, lexical_tokens, normalize_text, split_sentences, strip_markers
from rag.types import CheckResult, Citation, Passage

CONFLICT_RULE = ("Answer from passage [{n}] only, in a few words. If passage [{n}] does not answer it, reply "
                 "with exactly: none")
CONFLICT_REPLY_TOKENS = 24
MAX_VALUE_CHARS = 100  # a longer "value" is a sentence, not a figure or a name
# Capitalised words that start sentences or name nothing in particular: not the name an answer gives.
_NOT_NAMES = {"the", "a", "an", "in", "on", "at", "it", "its", "according", "yes", "no", "none", "passage",
              "article", "articles", "answer", "this", "that", "there", "he", "she", "they"}
_NAME = re.compile(r"\b[A-Z][\w'.&-]*")


@dataclass
class Conflict:
    """Two reports that give different values: the sentence that says so, its groups and the new citation."""

    sentence: str
    groups: list[dict[str, Any]]
    citations: list[Citation] = field(default_factory=list)
    replace_answer: bool = False  # the answer cited an older report than the newest one asked for


def focus_values(text: str, question: str) -> set[str]:
    """The figures and names a text gives that the question does not name: what two reports can differ on.
    Lower-cased tokens; names are capitalised words that are not stop words."""
    plain = normalize_text(strip_markers(text))
    asked = set(lexical_tokens(question))
    numbers = {t for t in lexical_tokens(plain) if t[0].isdigit()} - asked
    names = {w.lower().strip(".'") for w in _NAME.findall(plain)}
    names = {n for n in names if n and n not in STOP_WORDS and n not in _NOT_NAMES and n not in asked}
    return numbers | names


def agree(one: set[str], other: set[str]) -> bool:
    """Whether two replies' values can be the same report: figures are compared when both give some (one's within
    the other's: "June 19, 2020" and "6/19/2020" agree, "June 9, 2010" does not), else names (any shared:
    "Tim Buckley" and "Buckley")."""
    numbers = {v for v in one if v[0].isdigit()}, {v for v in other if v[0].isdigit()}
    if all(numbers):
        return numbers[0] <= numbers[1] or numbers[1] <= numbers[0]
    return bool(one & other)


def states_it(question: str, value: str, passage: Passage) -> bool:
    """Whether the passage's sentence holding `value` answers the question itself: it names every figure of the
    question and at least STATEMENT_COVERAGE of its content words, its time phrases aside ("the most recent level"
    is stated by "stood at 49 percent")."""
    numbers, words = key_terms(without_time_words(question))
    have_numbers, have_words = key_terms(supporting_span(value, passage)[2])
    return numbers <= have_numbers and len(words & have_words) >= STATEMENT_COVERAGE * len(words)


def detect(question: str, checked: CheckResult, context: Context, generator: Generator, settings: Settings,
           scope: TimeScope | None, floor: float, calls: list[dict[str, Any]]) -> Conflict | None:
    """The disagreement between the cited passage and another article's, or None (see the module's text)."""
    if context.whole_document or settings.conflict_checks <= 0 or not checked.citations:
        return None
    answered = " ".join(s for s in split_sentences(checked.text) if strip_markers(s) not in checked.declined)
    values = focus_values(answered, question)
    if not values:
        return None
    first = checked.citations[0]
    cited = context.passages[first.marker - 1]
    ask = _asker(question, context, generator, settings, calls)
    latest = bool(scope and scope.latest and cited.published)
    for number, passage in _candidates(question, values, cited, context.passages, checked, floor,
                                       settings.conflict_checks, latest):
        other = ask(number, passage)
        if not other:
            continue
        own = ask(first.marker, cited)
        if not own or agree(focus_values(own, question), focus_values(other, question)):
            continue
        if not (states_it(question, own, cited) and states_it(question, other, passage)):
            continue  # a value of something else the passage speaks of: the winner where the runner-up was asked
        return _conflict((own, first.marker, cited), (other, number, passage), question, scope)
    return None


def _candidates(question: str, values: set[str], cited: Passage, passages: list[Passage], checked: CheckResult,
                floor: float, limit: int, latest: bool = False) -> list[tuple[int, Passage]]:
    """Passages of other articles, relevant, covering the question's figures and words about as well as the cited
    one, and not holding all the answer's values (those agree): the ones worth asking. When the latest is asked
    for, only reports newer than the cited one, newest first, whatever values they hold (a revision names the
    figure it replaces)."""
    numbers, words = key_terms(question)
    cited_words = _covered(words, cited.text)
    cited_docs = {c.doc_id for c in checked.citations}
    chosen = []
    for number, passage in enumerate(passages, start=1):
        if passage.doc_id in cited_docs or passage.relevance < floor:
            continue
        if latest and not passage.published > cited.published:
            continue
        held = _values_in(passage.text)
        if (values <= held and not latest) or not numbers <= set(lexical_tokens(passage.text)):
            continue
        if _covered(words, passage.text) < cited_words - 1:
            continue
        chosen.append((number, passage))
    if latest:
        chosen.sort(key=lambda item: item[1].published, reverse=True)
    return chosen[:limit]


def _covered(words: set[str], text: str) -> int:
    return len(words & key_terms(text)[1])


def _asker(question: str, context: Context, generator: Generator, settings: Settings,
           calls: list[dict[str, Any]]) -> Callable[[int, Passage], str]:
    """Asks one passage for its own answer, after the kept passages: its reply when grounded in that passage and
    short, else ""."""
    replies: dict[int, str] = {}

    def ask(number: int, passage: Passage) -> str:
        if number not in replies:
            messages, prefix = build_prompt(question, context, settings, CONFLICT_RULE.format(n=number))
            reply, usage = complete(generator, messages, CONFLICT_REPLY_TOKENS, ["\n"], prefix)
            calls.append({"purpose": "conflict", **usage.to_dict()})
            replies[number] = _grounded(strip_markers(reply).strip(" .\"'"), passage, question)
        return replies[number]

    return ask


def _grounded(reply: str, passage: Passage, question: str) -> str:
    if not reply or reply.lower().startswith("none") or len(reply) > MAX_VALUE_CHARS:
        return ""
    values = focus_values(reply, question)
    return reply if values and values <= _values_in(passage.text) else ""


def _values_in(text: str) -> set[str]:
    """Every token and capitalised name of a text, lower-cased as focus_values makes them: what a value must be
    among to be in the text."""
    return set(lexical_tokens(text)) | {w.lower().strip(".'") for w in _NAME.findall(text)}


def _conflict(own: tuple[str, int, Passage], other: tuple[str, int, Passage], question: str,
              scope: TimeScope | None) -> Conflict:
    sides = [own, other]
    newest_first = bool(scope and scope.latest and own[2].published and other[2].published
                        and own[2].published != other[2].published)
    if newest_first:
        sides.sort(key=lambda side: side[2].published, reverse=True)
        (new_value, new_n, new_p), (old_value, old_n, old_p) = sides
        sentence = (f"The newest report gives {new_value} [{new_n}]{_provenance_note(new_p)}; an earlier one gave "
                    f"{old_value} [{old_n}]{_provenance_note(old_p)}.")
    else:
        sentence = "The articles disagree: " + "; ".join(f"{v} [{n}]{_provenance_note(p)}" for v, n, p in sides) + "."
    value, number, passage = other
    start, end, span, score = supporting_span(value, passage)
    citation = Citation(number, passage.chunk_id, passage.doc_id, passage.title, passage.text, start, end, span,
                        passage.relevance, round(max(score, 0.0), 3), passage.published, passage.outlet)
    groups = [{"value": v, "markers": [n], "sources": [_source(p)]} for v, n, p in sides]
    return Conflict(sentence, groups, [citation], replace_answer=newest_first and sides[0] is other)


def _provenance_note(passage: Passage) -> str:
    known = ", ".join(part for part in (passage.published, passage.outlet) if part)
    return f" ({known})" if known else ""


def _source(passage: Passage) -> dict[str, str]:
    return {"doc_id": passage.doc_id, "title": passage.title, "published": passage.published,
            "outlet": passage.outlet}
