"""BM25 over a build's passages (bm25s): built from the chunks as `rag index` streams them, saved in the build,
memory-mapped when the index loads."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rag.text import lexical_tokens

FOLDER = "bm25"  # inside a build folder
EMPTY = "<empty>"  # the one token of a passage with none left after stop words, so every row has a term


def _stop_words() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def passage_tokens(title: str, text: str, stop: frozenset[str]) -> list[str]:
    """What BM25 indexes of a passage: its article's title and its text, without English stop words."""
    return [t for t in lexical_tokens(title + " " + text) if t not in stop] or [EMPTY]


class _TokenIds:
    """The corpus's token ids as one flat int32 array and row offsets: 4 bytes a token, where bm25s's own lists of
    lists of Python ints take about ten times that. Iterating yields each passage's ids as a list, which is what
    bm25s.BM25.build_index_from_ids reads (three passes)."""

    def __init__(self, flat: array, offsets: array) -> None:
        self.flat = np.frombuffer(flat, dtype=np.int32)
        self.offsets = np.frombuffer(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[list[int]]:
        for start, end in zip(self.offsets[:-1], self.offsets[1:], strict=True):
            yield self.flat[start:end].tolist()


def write_bm25(passages: Iterable[tuple[str, str]], build: Path) -> dict:
    """Index (title, text) pairs, in chunk order, into `build`/bm25; returns the manifest's "lexical" entry."""
    import bm25s

    stop = _stop_words()
    vocab: dict[str, int] = {}
    flat, offsets = array("i"), array("q", [0])
    for title, text in passages:
        flat.extend(vocab.setdefault(token, len(vocab)) for token in passage_tokens(title, text, stop))
        offsets.append(len(flat))
    model = bm25s.BM25()
    model.scores = model.build_index_from_ids(list(range(len(vocab))), _TokenIds(flat, offsets), show_progress=False)
    model.vocab_dict = {**vocab, "": len(vocab)}  # as BM25.index leaves it (its empty token, never queried here)
    del flat, offsets
    model.save(str(build / FOLDER), show_progress=False)
    return {"backend": "bm25s", "folder": FOLDER, "passages": int(model.scores["num_docs"])}


class BM25Stage:
    """BM25 search over one build: its saved index memory-mapped (read from disk as queries touch it), or, for a
    build written before indexes were saved, built in memory from its chunks."""

    def __init__(self, model, size: int) -> None:  # noqa: ANN001 - a bm25s.BM25
        self._model = model
        self._size = size
        self._stop = _stop_words()

    @classmethod
    def load(cls, build: Path, size: int) -> BM25Stage:
        import bm25s

        model = bm25s.BM25.load(str(build / FOLDER), mmap=True, load_corpus=False)
        if int(model.scores["num_docs"]) != size:
            raise ValueError(f"its BM25 index holds {model.scores['num_docs']} passages, the build {size}")
        return cls(model, size)

    @classmethod
    def in_memory(cls, passages: list[tuple[str, str]]) -> BM25Stage:
        import bm25s

        stop = _stop_words()
        model = bm25s.BM25()
        model.index([passage_tokens(title, text, stop) for title, text in passages], show_progress=False)
        return cls(model, len(passages))

    def search(self, question: str, n: int) -> list[tuple[int, float]]:
        query = [t for t in lexical_tokens(question) if t not in self._stop and t in self._model.vocab_dict]
        if not query or self._size == 0:
            return []
        ids, scores = self._model.retrieve([query], k=min(n, self._size), show_progress=False)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
