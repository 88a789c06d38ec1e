"""Scoring rules: SQuAD exact match and F1, RGB's rule, refusal detection, retrieval ranks."""

from __future__ import annotations

import string
import unicodedata
from collections import Counter
from collections.abc import Iterable

import numpy as np

from rag.answering.flow import is_refusal
from rag.evaluation.questions import _ARTICLES, _PARAGRAPH_ID, Question
from rag.types import Passage

# ---------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation (ASCII and Unicode), no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold."""
    plain = normalize_answer(prediction)
    return max((float(plain == normalize_answer(g)) for g in golds), default=0.0)


def f1(prediction: str, golds: Iterable[str]) -> float:
    """SQuAD token F1, the best over the golds."""
    return max((_token_f1(prediction, g) for g in golds), default=0.0)


def _token_f1(prediction: str, gold: str) -> float:
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, golds: Iterable[str]) -> bool:
    """The answer-accuracy criterion: some normalised gold occurs in the normalised prediction."""
    plain = normalize_answer(prediction)
    return any(gold and gold in plain for gold in map(normalize_answer, golds))


def rgb_correct(reply: str, gold: str | list) -> bool:
    """RGB's rule: every item occurs in the lower-cased reply; an item that is a list is alternatives (any)."""
    reply = reply.lower()
    items = gold if isinstance(gold, list) else [gold]
    return all(any(alt.lower() in reply for alt in (item if isinstance(item, list) else [item])) for item in items)


def detect_refusal(text: str, refused: bool = False, refusal_text: str = "") -> bool:
    """Whether a reply declines: the pipeline's flag or a refusal in the words."""
    return refused or is_refusal(text, refusal_text)


def answer_found(text: str, question: Question) -> bool:
    """Whether the text holds the question's gold answer, by the rule of its set (project or RGB)."""
    if question.rgb_answer is not None:
        return rgb_correct(text, question.rgb_answer)
    return contains_answer(text, question.answers)


def passage_relevant(passage: Passage, question: Question) -> bool:
    """A passage is relevant when it holds a gold answer or covers the question's evidence."""
    return answer_found(passage.text, question) or any(_covers(passage, e) for e in question.evidence)


def _covers(passage: Passage, evidence: str) -> bool:
    paragraph = _PARAGRAPH_ID.match(evidence.strip())
    if paragraph:
        first, last = passage.paragraphs
        return first <= int(paragraph.group(1)) <= last
    return normalize_answer(evidence) in normalize_answer(passage.text)


def first_relevant_rank(passages: list[Passage], question: Question) -> int | None:
    return next((rank for rank, p in enumerate(passages, start=1) if passage_relevant(p, question)), None)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None
