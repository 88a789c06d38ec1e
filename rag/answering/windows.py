"""Reading the sentences that matter: a retrieved passage cut to its best-matching sentence and the sentences
around it, up to a token budget, so that the generator reads (and pays for) less of each passage.

The window is one contiguous span of the passage, so a citation's offsets into the article stay exact and the
checks judge the reply against the very text the generator read."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rag.text import key_terms, sentence_spans
from rag.types import Passage


def sentence_scores(question: str, passage: Passage, spans: list[tuple[int, int]]) -> list[float]:
    """How well each sentence matches the question: its share of the question's numbers and key words, a number
    counting twice (a figure asked about names the sentence that holds it)."""
    numbers, words = key_terms(question)
    weight = 2 * len(numbers) + len(words)
    if not weight:
        return [0.0] * len(spans)
    scores = []
    for start, end in spans:
        have_numbers, have_words = key_terms(passage.text[start:end])
        scores.append((2 * len(numbers & have_numbers) + len(words & have_words)) / weight)
    return scores


def sentence_window(question: str, passage: Passage, budget: int, count_tokens: Callable[[str], int]) -> Passage:
    """The passage cut to its best-matching sentence and its neighbours, the sentence after first (a news sentence
    is usually explained by the one that follows it), while the window stays within `budget` tokens. A passage
    within the budget, or one with no sentence matching the question, is read whole."""
    text = passage.text
    if count_tokens(text) <= budget:
        return passage
    spans = sentence_spans(text)
    scores = sentence_scores(question, passage, spans)
    if len(spans) < 2 or max(scores) == 0.0:
        return passage
    best = scores.index(max(scores))
    first, last = best, best
    used = count_tokens(text[spans[best][0]:spans[best][1]])
    open_sides = {1, -1}  # after, before: a side closes at its first sentence that does not fit
    while open_sides:
        for side in (1, -1):
            if side not in open_sides:
                continue
            step = last + 1 if side == 1 else first - 1
            cost = count_tokens(text[spans[step][0]:spans[step][1]]) if 0 <= step < len(spans) else budget + 1
            if used + cost > budget:
                open_sides.discard(side)
                continue
            used += cost
            first, last = min(first, step), max(last, step)
    start, end = spans[first][0], spans[last][1]
    return dataclasses.replace(passage, text=text[start:end], start=passage.start + start,
                               end=passage.start + end)
