"""Checking an answer's citations: every sentence against the passage it cites, fixing, adding or flagging markers."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from rag.dates import spoken_date
from rag.text import (
    MARKER,
    MARKER_RUN,
    STOP_WORDS,
    is_instruction,
    key_terms,
    lexical_tokens,
    normalize_text,
    sentence_spans,
    split_sentences,
    strip_markers,
)
from rag.types import CheckResult, Citation, Passage

PASSAGE_LABEL = re.compile(r"\b(?:passage|source|document)\s*#?\s*(\d+)\b", re.IGNORECASE)
# Words about the sources rather than the news: a sentence made only of these (and stop words) is filler.
_META = {
    "support", "supports", "supported", "supporting", "information", "info", "state", "states", "stated",
    "statement", "mention", "mentions", "mentioned", "passage", "passages", "article", "articles", "source",
    "sources", "document", "documents", "text", "context", "provided", "provides", "given", "according", "cited",
    "based", "above", "shown", "indicated", "evidence", "found", "here", "see",
}
_NEGATIONS = {"not", "no", "never", "nor", "neither", "none", "nothing", "cannot", "t"}


def closest_sentence(question: str, passages: list[Passage], reply: str = "") -> Citation | None:
    """What the articles say nearest a question they do not answer, shown with a refusal so the user can rephrase
    (marker 0: it is a source, not an answer): the sentence of the passages that best supports the question, that
    holds the most of the refused reply's figures and words (the sentence the generator drew on: it holds the answer
    when the refusal was a mistake), or, among the sentences about the question, the most of what the reply adds to
    the question, the more relevant passage first on a tie.

    The reply counts by its share of terms, not by `support`, which is 0 as soon as one figure is missing: a right
    reply that adds a date ("Toy Story 4 won … on February 9, 2020") must still find its sentence. What the reply adds
    counts only in a sentence about the question (one sharing a key word with it, and holding every figure the question
    gives or giving no figure at all), so that an invented answer cannot pull the sentence elsewhere: "London" for the
    2004 Olympics stays out of the sentence on London's 2012 Games. Chosen on the tune data's answerable replies only
    (RGB 50-99, the project's tune split; docs/results.md)."""
    claim = strip_markers(reply)
    asked = key_terms(question)
    said = key_terms(claim)
    added = (said[0] - asked[0]) | (said[1] - asked[1])

    def about_question(numbers: set[str], words: set[str]) -> bool:
        return bool(asked[1] & words) and (not numbers or asked[0] <= numbers)

    def score(text: str) -> float:
        numbers, words = key_terms(text)
        adds = len(added & (numbers | words)) / len(added) if added and about_question(numbers, words) else 0.0
        return max(support(question, text), term_share(claim, text), adds)

    scored = [((score(text), p.relevance), p, start, end)
              for p in passages for start, end in sentence_spans(p.text) for text in (p.text[start:end],)]
    if not scored:
        return None
    (best, _), passage, start, end = max(scored, key=lambda item: item[0])
    span = passage.text[start:end]
    if is_instruction(span):  # never offer a planted instruction as what the articles say
        return None
    return Citation(0, passage.chunk_id, passage.doc_id, passage.title, passage.text, passage.start + start,
                    passage.start + end, span, passage.relevance, round(max(best, 0.0), 3), passage.published,
                    passage.outlet)


def support(claim: str, passage: str) -> float:
    """How well `passage` backs `claim`: 0 when a number of the claim is missing, else the share of its words found."""
    numbers, words = key_terms(claim)
    have_numbers, have_words = key_terms(passage)
    if numbers - have_numbers:
        return 0.0
    if not words:
        return 1.0 if numbers else 0.0
    return len(words & have_words) / len(words)


def term_share(claim: str, passage: str) -> float:
    """The share of the claim's numbers and content words that the passage holds (0 for a claim without any)."""
    numbers, words = key_terms(claim)
    have_numbers, have_words = key_terms(passage)
    terms = numbers | words
    return len(terms & (have_numbers | have_words)) / len(terms) if terms else 0.0


def names(claim: str) -> set[str]:
    """Key terms of the capitalised words of a claim after its first word ("Sam Altman plans" -> {"altma"})."""
    words = normalize_text(claim).split()[1:]
    return key_terms(" ".join(w for w in words if w[:1].isupper()))[1]


def claim_support(claim: str, passage: str) -> float:
    """`support`, and 0 when the passage lacks a name the claim gives: a figure next to the wrong name is no support."""
    return support(claim, passage) if names(claim) <= key_terms(passage)[1] else 0.0


def supporting_span(claim: str, passage: Passage, prefer_figures: bool = False) -> tuple[int, int, str, float]:
    """The sentence of the passage that best supports the claim, with document offsets.

    With `prefer_figures`, a sentence holding a number gets a 0.5 bonus (for "when" and "how much" questions)."""
    best = (passage.start, passage.end, passage.text, -1.0)
    for start, end in sentence_spans(passage.text):
        text = passage.text[start:end]
        score = support(claim, text) + (0.5 if prefer_figures and re.search(r"\d", text) else 0.0)
        if score > best[3]:
            best = (passage.start + start, passage.start + end, text, score)
    return best


def normalise_markers(text: str) -> str:
    """"[1, 2]" -> "[1][2]"; "(Passage 2)" / "Passage 2" -> "[2]"."""
    text = MARKER.sub(lambda m: "".join(f"[{n}]" for n in re.findall(r"\d+", m.group(1))), text)
    text = re.sub(r"\(\s*(?:passage|source|document)\s*#?\s*(\d+)\s*\)", r"[\1]", text, flags=re.IGNORECASE)
    return PASSAGE_LABEL.sub(r"[\1]", text)


def is_filler(claim: str) -> bool:
    """True for a sentence that only talks about the sources ("This is supported by passage.", "According to the
    passages."): no number, no negation, and no content word besides words about passages and support."""
    tokens = lexical_tokens(normalize_text(strip_markers(claim)))
    if not any(t in _META for t in tokens) or any(t[0].isdigit() or t in _NEGATIONS for t in tokens):
        return False
    return all(t in _META or t in STOP_WORDS or len(t) <= 2 for t in tokens)


def check_citations(text: str, passages: list[Passage], min_support: float,
                    declines: Callable[[str], bool] | None = None, name_rule: bool = True) -> CheckResult:
    """Verify each sentence against its cited passages; fix a wrong marker, add a missing one, flag the rest.

    A sentence for which `declines` is true ("The articles do not say how long he stayed.") is kept as it is,
    without a marker, and listed in `declined`: it is the part of a partial answer the articles do not give.
    Without `name_rule`, a name missing from the passage lowers the support like any word instead of voiding it
    (for replies the fitted decision accepted); a missing number always voids it."""
    score = claim_support if name_rule else support
    result = CheckResult(text="")
    used: dict[int, Citation] = {}
    out_sentences = []
    for sentence in split_sentences(normalise_markers(text)):
        claim = strip_markers(sentence)
        cited = [int(n) for n in re.findall(r"\[(\d+)\]", sentence)]
        if is_filler(claim):
            result.fixes.append(f"dropped filler: {claim}")
            continue
        if declines is not None and declines(claim):
            result.declined.append(claim)
            out_sentences.append(claim)
            continue
        numbers, words = key_terms(claim)
        if not numbers and not words:
            out_sentences.append(sentence)
            continue
        scores = {i: score(claim, as_read(p)) for i, p in enumerate(passages, start=1)}
        valid = [n for n in dict.fromkeys(cited) if n in scores and scores[n] >= min_support]
        if not valid:
            best = max(scores, key=lambda i: (scores[i], -i), default=None)
            if best is not None and scores[best] >= min_support:
                valid = [best]
                result.fixes.append(f"{'replaced ' + str(cited) if cited else 'added'} -> [{best}]: {claim}")
            else:
                result.unsupported.append(claim)
        if valid:
            result.supported_sentences += 1
            sentence = claim.rstrip() + "".join(f" [{n}]" for n in valid) if claim[-1:] not in ".!?" else \
                claim[:-1].rstrip() + "".join(f" [{n}]" for n in valid) + claim[-1]
            for n in valid:
                if n not in used:
                    start, end, span, _ = supporting_span(claim, passages[n - 1])
                    p = passages[n - 1]
                    used[n] = Citation(n, p.chunk_id, p.doc_id, p.title, p.text, start, end, span, p.relevance,
                                       round(scores[n], 3), p.published, p.outlet)
        else:
            sentence = claim
        out_sentences.append(sentence)
    result.text = " ".join(out_sentences)
    result.citations = [used[n] for n in sorted(used)]
    return result


def renumber(text: str, citations: list[Citation], groups: list[dict[str, Any]] | None = None,
             ) -> tuple[str, list[Citation], list[dict[str, Any]]]:
    """The text, its citations and its conflict groups with the markers numbered as a reader meets them: [1], [2], …
    in order of first appearance, without gaps, so that the n-th source a front-end lists is the passage of [n]
    (the checks number them by the passages' order in the prompt). A list of markers becomes adjacent markers
    ("[2], [1]" and "[1] and [2]" -> "[1][2]"), so a front-end that drops a marker leaves no ", ," behind.

    A marker that no citation backs opens nothing and is dropped, and so is a citation that no marker names;
    the citations come back in the new order."""
    cited = {c.marker: c for c in citations}
    numbers: dict[int, int] = {}

    def rewrite(match: re.Match[str]) -> str:
        found = [int(n) for n in re.findall(r"\d+", match.group(2)) if int(n) in cited]
        for old in found:
            numbers.setdefault(old, len(numbers) + 1)
        new = sorted({numbers[old] for old in found})
        return match.group(1) + "".join(f"[{n}]" for n in new) if new else ""

    text = MARKER_RUN.sub(rewrite, text)
    renumbered = sorted((dataclasses.replace(c, marker=numbers[c.marker]) for c in citations if c.marker in numbers),
                        key=lambda c: c.marker)
    regrouped = [{**group, "markers": [numbers[m] for m in group.get("markers") or [] if m in numbers]}
                 for group in groups or []]
    return text, renumbered, regrouped


def as_read(passage: Passage) -> str:
    """A passage as the generator read it: its text, and the outlet and date its header gave ("in February
    2024, according to the Gazette" is supported by a passage dated 2024-02-14 from the Gazette)."""
    return normalize_text(" ".join(part for part in (passage.text, passage.outlet, spoken_date(passage.published))
                                   if part))


def is_bare_label(text: str) -> bool:
    """True for replies such as "[1]" or "Passage 2." that name a passage instead of answering."""
    rest = PASSAGE_LABEL.sub("", strip_markers(normalise_markers(text)))
    return not re.search(r"[^\W_]", rest)
