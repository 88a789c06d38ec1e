"""Checking an answer's citations: every sentence against the passage it cites, fixing, adding or flagging markers."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from rag.ingest import normalize_text
from rag.retrieval import Passage, lexical_tokens

MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
PASSAGE_LABEL = re.compile(r"\b(?:passage|source|document)\s*#?\s*(\d+)\b", re.IGNORECASE)
# A stop, then markers that belong to the sentence before it ("... 2027. [2][3]"), then the next sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])(\s*(?:\[\d+\])+)?\s+(?=[A-Z0-9\"'“])")
_PASSAGE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
# Words written with a period that seldom end a sentence; "No." is one only before a number ("No. 3").
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "gov", "sen", "rep", "rev", "lt", "col", "sgt",
    "capt", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "inc", "co",
    "corp", "ltd", "dept", "univ", "est", "approx", "vs", "e.g", "i.e", "cf", "al", "fig", "vol", "pp",
}
_STOP = {
    "the", "and", "for", "that", "this", "with", "from", "has", "have", "had", "was", "were", "are", "is", "its",
    "will", "would", "also", "which", "who", "whom", "what", "when", "where", "why", "how", "been", "being",
    "their", "they", "them", "there", "than", "then", "into", "about", "such", "said", "says", "say", "did",
    "does", "not", "but", "can", "could", "our", "out", "all", "any", "his", "her", "she", "him", "you",
    "according", "passage", "passages", "article", "articles", "mentioned", "states", "stated",
}
# Words about the sources rather than the news: a sentence made only of these (and stop words) is filler.
_META = {
    "support", "supports", "supported", "supporting", "information", "info", "state", "states", "stated",
    "statement", "mention", "mentions", "mentioned", "passage", "passages", "article", "articles", "source",
    "sources", "document", "documents", "text", "context", "provided", "provides", "given", "according", "cited",
    "based", "above", "shown", "indicated", "evidence", "found", "here", "see",
}
_NEGATIONS = {"not", "no", "never", "nor", "neither", "none", "nothing", "cannot", "t"}


@dataclass
class Citation:
    marker: int
    chunk_id: int
    doc_id: str
    title: str
    passage: str
    span_start: int | None  # offsets of the supporting sentence in the document's text
    span_end: int | None
    span_text: str
    retrieval_score: float
    support: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CheckResult:
    text: str
    citations: list[Citation] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # what the checker changed, for logs and tests
    supported_sentences: int = 0


def key_terms(text: str) -> tuple[set[str], set[str]]:
    """Numbers and content words of a claim; "1.02-trillion" and "1.02 trillion" give the same terms."""
    tokens = lexical_tokens(normalize_text(text))
    numbers = {t for t in tokens if t[0].isdigit()}
    words = {t[:5] for t in tokens if not t[0].isdigit() and len(t) > 2 and t not in _STOP}
    return numbers, words


def support(claim: str, passage: str) -> float:
    """How well `passage` backs `claim`: 0 when a number of the claim is missing, else the share of its words found."""
    numbers, words = key_terms(claim)
    have_numbers, have_words = key_terms(passage)
    if numbers - have_numbers:
        return 0.0
    if not words:
        return 1.0 if numbers else 0.0
    return len(words & have_words) / len(words)


def _ends_sentence(text: str, stop: int, following: int) -> bool:
    """Whether the punctuation just before `stop` ends a sentence, given where the next one would begin.

    Not after an abbreviation ("Mr.", "e.g.", "U.S.", "No. 3"), an initial ("J. Smith"), or before a lower-case word."""
    if following < len(text) and text[following].islower():
        return False
    if text[stop - 1] != ".":
        return True
    word = re.split(r"[^A-Za-z.]", text[max(0, stop - 30):stop - 1])[-1].lstrip(".")
    if word.lower() in ("no", "nos"):
        return not text[following:following + 1].isdigit()
    return not (word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z](?:\.[A-Z])*", word))


def names(claim: str) -> set[str]:
    """Key terms of the capitalised words of a claim after its first word ("Sam Altman plans" -> {"altma"})."""
    words = normalize_text(claim).split()[1:]
    return key_terms(" ".join(w for w in words if w[:1].isupper()))[1]


def claim_support(claim: str, passage: str) -> float:
    """`support`, and 0 when the passage lacks a name the claim gives: a figure next to the wrong name is no support."""
    return support(claim, passage) if names(claim) <= key_terms(passage)[1] else 0.0


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer; markers after a stop ("... 2027. [2]") stay with the sentence before."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.group(1) or _ends_sentence(text, match.start(), match.end()):
            pieces.append(text[start:match.end()])
            start = match.end()
    pieces.append(text[start:])
    return [s for s in (p.strip() for p in pieces) if s]


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a passage; a line break always ends one."""
    spans, start = [], 0
    for match in _PASSAGE_BREAK.finditer(text):
        if "\n" not in match.group() and not _ends_sentence(text, match.start(), match.end()):
            continue
        if text[start:match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def supporting_span(claim: str, passage: Passage, prefer_figures: bool = False) -> tuple[int, int, str, float]:
    """The sentence of the passage that best supports the claim, with document offsets.

    With `prefer_figures`, a sentence holding a number gets a 0.5 bonus (for "when" and "how much" questions)."""
    best = (passage.start, passage.end, passage.text, -1.0)
    for start, end in _sentence_spans(passage.text):
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


def strip_markers(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", MARKER.sub("", text)).strip()


def is_filler(claim: str) -> bool:
    """True for a sentence that only talks about the sources ("This is supported by passage.", "According to the
    passages."): no number, no negation, and no content word besides words about passages and support."""
    tokens = lexical_tokens(normalize_text(strip_markers(claim)))
    if not any(t in _META for t in tokens) or any(t[0].isdigit() or t in _NEGATIONS for t in tokens):
        return False
    return all(t in _META or t in _STOP or len(t) <= 2 for t in tokens)


def check_citations(text: str, passages: list[Passage], min_support: float) -> CheckResult:
    """Verify each sentence against its cited passages; fix a wrong marker, add a missing one, flag the rest."""
    result = CheckResult(text="")
    used: dict[int, Citation] = {}
    out_sentences = []
    for sentence in split_sentences(normalise_markers(text)):
        claim = strip_markers(sentence)
        cited = [int(n) for n in re.findall(r"\[(\d+)\]", sentence)]
        if is_filler(claim):
            result.fixes.append(f"dropped filler: {claim}")
            continue
        numbers, words = key_terms(claim)
        if not numbers and not words:
            out_sentences.append(sentence)
            continue
        scores = {i: claim_support(claim, normalize_text(p.text)) for i, p in enumerate(passages, start=1)}
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
                                       round(scores[n], 3))
        else:
            sentence = claim
        out_sentences.append(sentence)
    result.text = " ".join(out_sentences)
    result.citations = [used[n] for n in sorted(used)]
    return result


def is_bare_label(text: str) -> bool:
    """True for replies such as "[1]" or "Passage 2." that name a passage instead of answering."""
    rest = PASSAGE_LABEL.sub("", strip_markers(normalise_markers(text)))
    return not re.search(r"[^\W_]", rest)
