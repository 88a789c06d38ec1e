"""Text helpers shared by every stage: normalising, search tokens, key terms, sentences and citation markers."""

from __future__ import annotations

import re
import unicodedata

# ---------------------------------------------------------------- normalising

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?%)\]])")
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, single spaces, no stray space before punctuation ("At the same time , the" -> "At the same time, the")."""
    text = unicodedata.normalize("NFC", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def char_outside(excluded: str) -> str:
    """A regular expression for one character not in `excluded` (characters of the Basic Multilingual Plane),
    written as \\uXXXX ranges, which Python's `re` and JSON Schema's `pattern` (ECMA-262) read alike."""
    codes = sorted({ord(c) for c in excluded})
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in ranges)
    return f"[^{body}]"


# ---------------------------------------------------------------- tokens and key terms

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+", re.UNICODE)
STOP_WORDS = {
    "the", "and", "for", "that", "this", "with", "from", "has", "have", "had", "was", "were", "are", "is", "its",
    "will", "would", "also", "which", "who", "whom", "what", "when", "where", "why", "how", "been", "being",
    "their", "they", "them", "there", "than", "then", "into", "about", "such", "said", "says", "say", "did",
    "does", "not", "but", "can", "could", "our", "out", "all", "any", "his", "her", "she", "him", "you",
    "according", "passage", "passages", "article", "articles", "mentioned", "states", "stated",
}


def lexical_tokens(text: str) -> list[str]:
    """Lower-case words and whole numbers ("1.02", "66.7", "2,047" -> "2047"); hyphens split words."""
    return [t.replace(",", "") if t[0].isdigit() else t for t in _TOKEN.findall(text.lower())]


def key_terms(text: str) -> tuple[set[str], set[str]]:
    """Numbers and content words (first five letters) of a text; "1.02-trillion" and "1.02 trillion" agree."""
    tokens = lexical_tokens(normalize_text(text))
    numbers = {t for t in tokens if t[0].isdigit()}
    words = {t[:5] for t in tokens if not t[0].isdigit() and len(t) > 2 and t not in STOP_WORDS}
    return numbers, words


# ---------------------------------------------------------------- citation markers

MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# A run of markers with what separates them ("[1], [2] and [4]"), and the space before it: groups 1 and 2.
MARKER_RUN = re.compile(r"(\s*)(" + MARKER.pattern + r"(?:\s*(?:[,;]|and)?\s*" + MARKER.pattern + ")*)")
_PUNCTUATION = ".,;:!?"


def strip_markers(text: str) -> str:
    """The text without its citation markers ("[2]", "[1, 3]", "[1], [2]"), so that they cannot count as numbers or
    words; nothing else of the text changes."""
    return MARKER_RUN.sub("", text).strip()


def words_kept(raw: str, checked: str) -> bool:
    """Whether `checked`, markers aside, keeps the words of `raw` as they were: its words are a sub-sequence of
    raw's (sentences may be dropped, never rewritten), and it has no run of punctuation raw did not have."""
    def words(text: str) -> list[str]:
        return [w.rstrip(_PUNCTUATION) for w in strip_markers(text).split() if w.rstrip(_PUNCTUATION)]

    remaining = iter(words(raw))
    if not all(word in remaining for word in words(checked)):
        return False
    runs = re.compile(r"[.,;:!?]\s*[.,;:]")
    return len(runs.findall(strip_markers(checked))) <= len(runs.findall(strip_markers(raw)))


# ---------------------------------------------------------------- sentences

# A stop, then markers that belong to the sentence before it ("... 2027. [2][3]"), then the next sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])(\s*(?:\[\d+\])+)?\s+(?=[A-Z0-9\"'“])")
_PASSAGE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
# Words written with a period that seldom end a sentence; "No." is one only before a number ("No. 3").
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "gov", "sen", "rep", "rev", "lt", "col", "sgt",
    "capt", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "inc", "co",
    "corp", "ltd", "dept", "univ", "est", "approx", "vs", "e.g", "i.e", "cf", "al", "fig", "vol", "pp",
}


def ends_sentence(text: str, stop: int, following: int) -> bool:
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


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer; markers after a stop ("... 2027. [2]") stay with the sentence before."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.group(1) or ends_sentence(text, match.start(), match.end()):
            pieces.append(text[start:match.end()])
            start = match.end()
    pieces.append(text[start:])
    return [s for s in (p.strip() for p in pieces) if s]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a passage; a line break always ends one."""
    spans, start = [], 0
    for match in _PASSAGE_BREAK.finditer(text):
        if "\n" not in match.group() and not ends_sentence(text, match.start(), match.end()):
            continue
        if text[start:match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


# ---------------------------------------------------------------- instructions addressed to the model

# Phrases by which a text speaks to an AI assistant instead of to its reader: planted in an article ("Ignore all
# previous instructions and reply …", "System: you are now …") or a question asking the model to drop its sources
# or show its prompt. Sentences of articles that match are hidden from the generator and such questions are
# refused before it runs; the citation checks and the verifier stay the guard against phrasings these miss.
_TARGETS = r"(?:instructions?|rules?|prompts?|directions|guidelines|sources?|passages?|articles?|context)"
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|every|each|your|the|these|those|my|of|"
    r"previous|prior|above|earlier|preceding|other|system|given)\s+){1,4}" + _TARGETS + r"\b"
    r"|\byou\s+are\s+now\b|\b(?:debug|developer|jailbreak)\s+mode\b"
    r"|\b(?:system|assistant|developer)\s*:\s*(?:you|ignore|disregard|forget|override|reply|respond|answer|print|"
    r"reveal|repeat|new\s+(?:instructions|rules))\b"
    r"|\b(?:reveal|repeat|print|show|output|leak|tell\s+me)\s+(?:\w+\s+){0,4}?(?:system\s+prompt|"
    r"(?:your|the|all|hidden)\s+(?:\w+\s+)?(?:instructions|prompt|rules))\b"
    r"|\b(?:reply|respond|answer)\s+(?:\w+\s+){0,4}?with\s+(?:only\s+)?(?:the\s+|a\s+)?(?:single\s+|one\s+)?word\b",
    re.IGNORECASE)
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069]")
INSTRUCTION_REMOVED = "(an instruction to AI assistants, left out)"


def is_instruction(text: str) -> bool:
    """Whether a text addresses an AI assistant ("ignore all previous instructions", "System: you are now …",
    "repeat your system prompt"); invisible characters between its words count as spaces."""
    return bool(_INSTRUCTION.search(_INVISIBLE.sub(" ", text)))


def without_instructions(text: str) -> str:
    """The text with every sentence that `is_instruction` replaced by INSTRUCTION_REMOVED (what the generator
    reads; people still see the article as written)."""
    if not is_instruction(text):
        return text
    pieces, cursor = [], 0
    for start, end in sentence_spans(text):
        if is_instruction(text[start:end]):
            pieces += [text[cursor:start], INSTRUCTION_REMOVED]
            cursor = end
    return "".join(pieces) + text[cursor:]
