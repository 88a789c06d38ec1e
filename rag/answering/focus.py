"""What a reply must answer and may not add: a detail the passages do not give (a date, a figure, a name in a
short phrase) is trimmed from a sentence whose core they support, and the sentences an answer rests on must carry the
question's focus (its figures and years, and the names it asks about)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.answering.citations import names, term_share
from rag.answering.decision import adds_information, holds_focus
from rag.dates import spoken_date
from rag.text import key_terms, normalize_text, sentence_spans, split_sentences, strip_markers
from rag.types import CheckResult, Citation, Passage

# A detail phrase: a preposition (or a comma) and at most six words up to the end of the unsupported term.
_LEADS = (r"in|on|at|by|from|since|during|of|for|with|to|until|after|before|around|about|nearly|almost|over|under|"
          r"some|roughly|approximately|as of|as early as|as many as|more than|less than|up to")
# A sentence's closing run of markers and full stop, in either order ("2021 [3].", "2021. [3]").
_MARKERS_AT_END = re.compile(r"(?:[.!?]\s*)?(?:\[\d+\]\s*)*[.!?]?\s*$")
# What may follow a detail's term within its phrase: up to three words, then punctuation, the end, or the next
# phrase or clause ("for 30 minutes", "in 2021 to lead"); a phrase running on further is not cut.
_PHRASE_TAIL = re.compile(rf"(?:\s+(?!(?:{_LEADS}|and|but|or|which|who|that)\b)[^\s,;()]+){{0,3}}"
                          rf"(?=\s*(?:[,;.)]|$)|\s+(?:{_LEADS}|and|but|or|which|who|that)\b)", re.IGNORECASE)
DETAIL_WORDS = 6  # the longest phrase trimmed as a detail; a longer one is the claim itself
# The start of a detail's phrase: a preposition (after a comma or a space); the term must follow it within
# DETAIL_WORDS - 2 words.
_PHRASE_LEAD = re.compile(rf"(?:,\s*|\s+)(?:{_LEADS})\s+", re.IGNORECASE)


def _ends(claim: str) -> tuple[str, str]:
    """A sentence without its closing markers and full stop, and those (so a trim keeps them)."""
    match = _MARKERS_AT_END.search(claim)
    return claim[:match.start()].rstrip(" ,;"), match.group().strip()


def _candidate_trims(body: str, missing: set[str]) -> Iterator[tuple[str, str]]:
    """The sentence with one phrase that holds an unsupported term removed, shortest removal first: a
    preposition's phrase ("in 2021"), a parenthesis, or a comma-set clause."""
    cuts: list[tuple[int, int]] = []
    tokens = [(token, set().union(*key_terms(token.group()))) for token in re.finditer(r"[^\s,;()]+", body)]
    for term in missing:
        for token, terms in tokens:
            if term not in terms:
                continue
            end = token.end()
            tail = _PHRASE_TAIL.match(body[end:])
            if tail:  # the phrase runs on to where the next one starts ("for 30 minutes", "with 300 firms,")
                cuts += [(lead, end + tail.end()) for lead in _phrase_leads(body[:token.start()])]
            clause_start = max(body.rfind(",", 0, token.start()), body.rfind("(", 0, token.start()))
            clause_end = min((i for i in (body.find(",", end), body.find(")", end)) if i >= 0), default=len(body))
            if clause_start >= 0:
                cuts.append((clause_start, clause_end + (body[clause_end:clause_end + 1] == ")")))
    for start, end in sorted(set(cuts), key=lambda cut: cut[1] - cut[0]):
        rest = body[end:]
        if body[start] == "," and rest.lstrip().startswith(","):  # a clause set off by two commas goes with both
            rest = rest.lstrip()[1:]
        if len(body[start:end].split()) <= DETAIL_WORDS + 1:
            kept = re.sub(r"\s{2,}", " ", body[:start] + " " + rest.lstrip()).strip(" ,;")
            yield kept, body[start:end].strip(" ,;()")


def _phrase_leads(before: str) -> list[int]:
    """Where a detail's phrase may start in the text before its term: each preposition at most DETAIL_WORDS - 2
    words back ("in 2021" and "by the Korean government in 2021" both; the shortest cut is tried first)."""
    return [lead.start() for lead in _PHRASE_LEAD.finditer(before)
            if len(before[lead.end():].split()) <= DETAIL_WORDS - 2]


def _sentences_read(passages: list[Passage]) -> list[str]:
    """Every sentence of the passages, each with its article's title, date and outlet (as the generator read it)."""
    return [" ".join((p.text[a:b], p.title, p.outlet, spoken_date(p.published)))
            for p in passages for a, b in sentence_spans(p.text)]


def _unstated(claim: str, sentences: list[str]) -> set[str]:
    """The claim's numbers and names that its best-supporting sentence does not hold (all of them without one)."""
    best = max(sentences, key=lambda s: term_share(claim, s), default="")
    numbers, words = key_terms(best)
    return (key_terms(claim)[0] - numbers) | (names(claim) - words)


def trim_details(reply: str, question: str, passages: list[Passage]) -> tuple[str, list[str]]:
    """The reply with each sentence that adds a detail its supporting sentence does not state ("established the
    Metaverse Alliance in 2021" against "has even established the Metaverse Alliance") cut down to what one sentence
    states, and the phrases cut. A detail is a short phrase (a date, a figure, a name); the cut sentence must still
    answer the question (a year for "when", a figure for "how much", a new name for "who"). A sentence with no such
    cut stays as it was, for the citation check and the decision to judge."""
    read = _sentences_read(passages)
    asked = set().union(*key_terms(question))
    kept_sentences, trimmed = [], []
    for sentence in split_sentences(reply):
        claim = strip_markers(sentence)
        missing = _unstated(claim, read) - asked  # the question's own words restated are no added detail
        body, ending = _ends(sentence)
        cut = next(((shorter, removed) for shorter, removed in _candidate_trims(body, missing)
                    if _may_cut(removed, question, asked) and not _unstated(strip_markers(shorter), read)
                    and adds_information(question, shorter) and holds_focus(question, strip_markers(shorter))),
                   None) if missing else None
        if cut is None:
            kept_sentences.append(sentence)
            continue
        trimmed.append(cut[1])
        kept_sentences.append(cut[0] + (" " if ending.startswith("[") else "") + ending)
    return " ".join(kept_sentences), trimmed


def _may_cut(removed: str, question: str, asked: set[str]) -> bool:
    """Whether a phrase may go as a detail: it holds none of the question's words, and nothing of the kind the
    question asks for (a date for "when", a figure for "how much", a name for "who"): what is asked is never cut,
    even when what is left still holds something of that kind."""
    kind_asked = not holds_focus(question, "")
    return not set().union(*key_terms(removed)) & asked and not (kind_asked and holds_focus(question, removed))


# ---------------------------------------------------------------- the question's focus

_QUESTION_WORDS = {"how", "what", "when", "where", "who", "whom", "whose", "which", "why", "did", "does", "do", "is",
                   "are", "was", "were", "will", "can", "has", "have"}


def question_focus(question: str) -> set[str]:
    """What a sentence must carry to answer this question and not a neighbouring one: the question's numbers and
    years ("by 2027"), and the names it asks about ("SpaceX", "the Metaverse Alliance"), as key terms."""
    return key_terms(question)[0] | _names_asked(question)


def _names_asked(question: str) -> set[str]:
    """The key terms of the names a question asks about (its capitalised words after the first, question words
    aside)."""
    words = [w for w in normalize_text(question).split()[1:] if w.lower().strip("?,.") not in _QUESTION_WORDS]
    return names("X " + " ".join(words))


def missing_focus(question: str, checked: CheckResult, passages: list[Passage]) -> set[str]:
    """The question's focus terms that none of the passages the answer cites carries (with the sentence before the
    supporting one where the passages read hold it, and the article's title, date and outlet): a true sentence of
    a passage about another year, another edition or another company does not answer this question. The whole
    passage counts, not the one sentence: measured on RGB 50-99, a sentence-level rule refused 17 of 50 answers of
    the normal pool, 10 of them right (docs/results.md). Every figure and year of the question must be there, and at
    least half of the names it asks about."""
    figures, names_asked = key_terms(question)[0], _names_asked(question)
    if not figures | names_asked or not checked.citations:
        return set()
    read = " ".join(" ".join((_sentence_before(c, passages), c.passage, c.title, c.outlet,
                              spoken_date(c.published))) for c in checked.citations)
    numbers, words = key_terms(read)
    missing_names = names_asked - words
    # Every figure and year, and at least half of the names: a passage says "Best Animated Feature at the Academy
    # Awards" for the question's "Oscar for Best Animated Film" (RGB 50-99).
    return (figures - numbers) | (missing_names if len(missing_names) * 2 > len(names_asked) else set())


def _sentence_before(citation: Citation, passages: list[Passage]) -> str:
    """The sentence before a citation's supporting one in its article, when a passage read holds it (the cited
    passage, or the one just before it)."""
    if citation.span_start is None:
        return ""
    earlier = [(p.start + b, p.text[a:b]) for p in passages if p.doc_id == citation.doc_id
               for a, b in sentence_spans(p.text) if p.start + b <= citation.span_start]
    return max(earlier)[1] if earlier else ""
