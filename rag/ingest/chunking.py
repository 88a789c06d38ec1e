"""Cutting a document into sentence-aware chunks that fit the embedder."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.calibration import CHUNK_SIZES, DEFAULT_CHUNKING
from rag.settings import Settings
from rag.text import normalize_text
from rag.types import Chunk, Document

# ---------------------------------------------------------------- sentence-aware chunking


@dataclass
class Sentence:
    start: int
    end: int
    paragraph: int
    tokens: int


def paragraphs(doc: Document) -> list[tuple[int, int]]:
    """(start, end) offsets of each non-empty line of the body; paragraph numbers count from 1."""
    return [(doc.body_start + m.start(), doc.body_start + m.end())
            for m in re.finditer(r"[^\n]*\S[^\n]*", doc.text[doc.body_start:])]


def document_sentences(doc: Document, count_tokens: Callable[[str], int], max_tokens: int) -> list[Sentence]:
    """Sentences with offsets into doc.text; a sentence longer than `max_tokens` is cut at word boundaries."""
    import pysbd

    segmenter = pysbd.Segmenter(language="en", clean=False)
    sentences: list[Sentence] = []
    for number, (p_start, p_end) in enumerate(paragraphs(doc), start=1):
        block = doc.text[p_start:p_end]
        cursor = 0
        for piece in segmenter.segment(block):
            piece = piece.strip()
            if not piece:
                continue
            at = block.find(piece, cursor)
            if at < 0:  # pysbd changed the text; fall back to the rest of the paragraph
                at, piece = cursor, block[cursor:].strip()
            cursor = at + len(piece)
            sentences += _fit(p_start + at, p_start + cursor, number, doc.text, count_tokens, max_tokens)
            if cursor >= len(block.rstrip()):
                break
    return sentences


def _fit(start: int, end: int, paragraph: int, text: str, count_tokens: Callable[[str], int],
         max_tokens: int) -> list[Sentence]:
    tokens = count_tokens(text[start:end])
    if tokens <= max_tokens:
        return [Sentence(start, end, paragraph, tokens)]
    pieces, piece_start = [], start
    words = list(re.finditer(r"\S+", text[start:end]))
    per_word = max(1, tokens // max(1, len(words)))
    step = max(1, max_tokens // per_word)
    for i in range(0, len(words), step):
        group = words[i: i + step]
        piece_end = start + group[-1].end()
        piece_start = start + group[0].start()
        pieces.append(Sentence(piece_start, piece_end, paragraph, count_tokens(text[piece_start:piece_end])))
    return pieces




def chunking(settings: Settings) -> tuple[int, int]:
    """(chunk_tokens, chunk_overlap_tokens): the settings where set, else the embedder's measured sizes."""
    tokens, overlap = CHUNK_SIZES.get(settings.embedder, DEFAULT_CHUNKING)
    return (settings.chunk_tokens or tokens,
            settings.chunk_overlap_tokens if settings.chunk_overlap_tokens >= 0 else overlap)


def chunk_document(doc: Document, count_tokens: Callable[[str], int], chunk_tokens: int,
                   overlap_tokens: int) -> list[Chunk]:
    """Pack whole sentences into chunks of at most `chunk_tokens`; each chunk starts with up to
    `overlap_tokens` worth of the previous chunk's last sentences, so a fact at a boundary is in both."""
    sentences = document_sentences(doc, count_tokens, chunk_tokens)
    groups: list[list[Sentence]] = []
    current: list[Sentence] = []
    for sentence in sentences:
        if current and sum(s.tokens for s in current) + sentence.tokens > chunk_tokens:
            groups.append(current)
            current = _overlap(current, overlap_tokens, chunk_tokens - sentence.tokens)
        current.append(sentence)
    if current:
        groups.append(current)
    chunks = []
    for index, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        raw = doc.text[start:end]
        chunks.append(Chunk(doc.doc_id, doc.title, index, start, end, (group[0].paragraph, group[-1].paragraph),
                            normalize_text(raw), raw))
    return chunks


def _overlap(previous: list[Sentence], overlap_tokens: int, room: int) -> list[Sentence]:
    kept: list[Sentence] = []
    budget = min(overlap_tokens, room)
    for sentence in reversed(previous[1:]):  # never repeat a whole chunk
        if sentence.tokens > budget:
            break
        kept.insert(0, sentence)
        budget -= sentence.tokens
    return kept
