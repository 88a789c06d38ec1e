"""Finding the passages for a question: dense (the vector store) and BM25 (rag/indexing/bm25.py) results, rank-fused,
optionally re-ranked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rag.arguments import BadArgument, PathArg, bounded_int, optional_path
from rag.calibration import CALIBRATIONS, UNCALIBRATED, Calibration
from rag.dates import TimeScope, request_scope
from rag.indexing.bm25 import BM25Stage
from rag.indexing.build import LoadedIndex, open_index
from rag.loaded import Loaded
from rag.models.embedders import get_embedder
from rag.settings import MAX_RETRIEVE_K, Settings, settings_or_default
from rag.text import lexical_tokens
from rag.types import Chunk, Passage

# "About as relevant" in cosine similarity: "the latest" reorders only passages this close to the best one (a newer
# passage on another subject must not lead), and a question's date range stands only when a passage within it is
# this close to the best of any date. A design margin (not fitted): reports of one story sit within a few hundredths
# of each other.
CLOSE_RELEVANCE = 0.1
FILTERED_DEPTH = 8  # with a date range, hits are fetched this many times deeper, then filtered
# A date range over more passages than this is searched through the vector store and filtered (its rows' vectors are
# not all read into memory: 100,000 768-d passages are 300 MB); below it, exactly over the range's rows.
EXACT_RANGE_ROWS = 100_000


class Reranker:
    """A sentence-transformers CrossEncoder re-scoring the fused candidates (only when one is named)."""

    def __init__(self, name: str, settings: Settings) -> None:
        from sentence_transformers import CrossEncoder

        self.name = name
        self._model = CrossEncoder(name, device=settings.device, local_files_only=True)

    def scores(self, question: str, texts: list[str]) -> list[float]:
        return [float(s) for s in self._model.predict([(question, t) for t in texts], show_progress_bar=False)]




def calibration(settings: Settings) -> Calibration:
    """The embedder's calibrated choices, with any explicitly set value (`min_relevance`, `bm25_weight` >= 0,
    `figure_rule` on/off) in their place."""
    base = CALIBRATIONS.get(settings.embedder, UNCALIBRATED)
    rule = {"on": True, "off": False}.get(settings.figure_rule, base.figure_rule)
    return Calibration(settings.min_relevance if settings.min_relevance >= 0 else base.min_relevance,
                       settings.bm25_weight if settings.bm25_weight >= 0 else base.bm25_weight, rule)


def reciprocal_rank_fusion(rankings: list[list[int]], k: int, weights: list[float] | None = None) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


class Retriever:
    """Dense + BM25 + fusion (+ re-ranking) over one loaded index. `run` returns plain Passages."""

    def __init__(self, index: LoadedIndex, settings: Settings) -> None:
        self.index = index
        self.settings = settings
        self.embedder = get_embedder(settings)
        self.bm25 = (index.lexical or BM25Stage.in_memory([(c.title, c.text) for c in index.chunks])
                     if settings.bm25 else None)
        self.reranker = Reranker(settings.reranker, settings) if settings.reranker else None
        self.calibration = calibration(settings)

    def run(self, question: str, k: int | None = None, scope: TimeScope | None = None) -> list[Passage]:
        """The top `k` passages for a question: one per group of near-copies, within `scope`'s dates."""
        return self.search(question, k, scope)[0]

    def search(self, question: str, k: int | None = None, scope: TimeScope | None = None,
               ) -> tuple[list[Passage], bool]:
        """The top passages and whether `scope`'s date range was applied. A range read from the question is
        dropped (all dates searched) when no passage within it reaches the relevance floor or comes within
        CLOSE_RELEVANCE of the best passage of any date: "How many passengers did the airport serve last year?" asks
        about last year, not about articles published then. A range the request gave is kept whatever it leaves."""
        k = k or self.settings.top_k
        query = self.embedder.embed_query(question)
        if scope is None or not scope.ranged:
            return self._ranked(question, query, k, scope, None), False
        passages = self._ranked(question, query, k, scope, self._rows_within(scope))
        if scope.source == "request":
            return passages, True
        everywhere = self._ranked(question, query, k, TimeScope(latest=scope.latest), None)
        best, best_anywhere = (max((p.relevance for p in found), default=0.0) for found in (passages, everywhere))
        if best < self.calibration.min_relevance or best < best_anywhere - CLOSE_RELEVANCE:
            return everywhere, False  # the phrase was about the content ("served last year"), not about publishing
        return passages, True

    def _rows_within(self, scope: TimeScope) -> np.ndarray:
        """The chunk rows of the articles whose publication date is within the scope's range."""
        kept = {doc_id for doc_id, entry in self.index.documents.items() if scope.holds(published_of(entry))}
        return np.flatnonzero(np.fromiter((c.doc_id in kept for c in self.index.chunks), dtype=bool,
                                          count=len(self.index.chunks)))

    def _ranked(self, question: str, query: np.ndarray, k: int, scope: TimeScope | None,
                allowed: np.ndarray | None) -> list[Passage]:
        n = max(self.settings.candidates, k)
        rankings: list[list[int]] = []
        weights: list[float] = []
        dense_rank: dict[int, int] = {}
        bm25_scores: dict[int, float] = {}
        if self.settings.dense:
            ranking = [i for i, _ in self._dense(query, n, allowed)]
            dense_rank = {i: r for r, i in enumerate(ranking, start=1)}
            rankings.append(ranking)
            weights.append(1.0)
        if self.bm25 is not None:
            hits = self._lexical(question, n, allowed)
            bm25_scores = dict(hits)
            rankings.append([i for i, _ in hits])
            weights.append(self.calibration.bm25_weight if self.settings.dense else 1.0)
        if not rankings:
            raise ValueError("both retrieval stages are off: turn on `dense` or `bm25`")
        fused = reciprocal_rank_fusion(rankings, self.settings.rrf_k, weights)
        # Exact cosine of the candidates only (the refusal gate uses it): the vectors may be millions, memory-mapped.
        candidates = sorted(fused)
        similarity = dict(zip(candidates, (self.index.vectors[candidates] @ query).tolist(), strict=True))
        figures = self._figures(question) if self.calibration.figure_rule else set()
        # A passage holding every figure the question names outranks one that lacks some: rank fusion
        # forgets how decisive an exact number match is, and dense vectors barely see numbers at all.
        order = sorted(fused, key=lambda i: (-self._figure_hits(i, figures), -fused[i], -similarity[i]))[:n]
        rerank: dict[int, float] = {}
        if self.reranker is not None and order:
            scores = self.reranker.scores(question, [self.index.chunks[i].text for i in order])
            rerank = dict(zip(order, scores, strict=True))
            order = sorted(order, key=lambda i: -rerank[i])
        passages = [self._passage(i, rank, similarity, dense_rank, bm25_scores, fused, rerank)
                    for rank, i in enumerate(order, start=1)]
        return self._newest_first(self._folded(passages, query, k, scope), scope)

    def _dense(self, query: np.ndarray, n: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if allowed is None:
            return self.index.store.search(query, n)
        if not len(allowed):
            return []
        if len(allowed) > EXACT_RANGE_ROWS:  # most of a large archive: the store's search, deeper, then filtered
            rows = set(allowed.tolist())
            return [(i, score) for i, score in self.index.store.search(query, n * FILTERED_DEPTH)
                    if i in rows][:n]
        # Exact search over the range's rows: a filtered approximate search could miss them all.
        scores = np.asarray(self.index.vectors[allowed] @ query)
        best = np.argsort(-scores)[:n]
        return [(int(allowed[b]), float(scores[b])) for b in best]

    def _lexical(self, question: str, n: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if allowed is None:
            return self.bm25.search(question, n)
        rows = set(allowed.tolist())
        hits = self.bm25.search(question, min(len(self.index.chunks), n * FILTERED_DEPTH))
        return [(i, s) for i, s in hits if i in rows][:n]

    def _folded(self, passages: list[Passage], query: np.ndarray, k: int, scope: TimeScope | None,
                ) -> list[Passage]:
        """The first `k` passages that are not near-copies of one already kept (rag.indexing.copies). A copy is
        folded only when it gives the same figures: a reprint that changed a number is a different report. The
        group's earliest-dated copy stands for it (the newest when the question asks for the latest), the others
        are named in its `also_in`."""
        if not self.settings.fold_copies:
            return passages[:k]
        groups = self.index.copy_group
        kept: list[Passage] = []
        seen: dict[int, set[frozenset[str]]] = {}
        for passage in passages:
            group = int(groups[passage.chunk_id])
            figures = self._numbers(passage.chunk_id)
            if group in seen and figures in seen[group]:
                continue
            seen.setdefault(group, set()).add(figures)
            kept.append(self._representative(passage, group, figures, query, scope))
            if len(kept) == k:
                break
        return kept

    def _numbers(self, row: int) -> frozenset[str]:
        return frozenset(t for t in lexical_tokens(self.index.chunks[row].text) if t[0].isdigit())

    def _representative(self, passage: Passage, group: int, figures: frozenset[str], query: np.ndarray,
                        scope: TimeScope | None) -> Passage:
        members = [int(r) for r in np.flatnonzero(np.asarray(self.index.copy_group) == group)]
        members = [r for r in members if self._numbers(r) == figures
                   and (scope is None or scope.holds(published_of(self.index.documents[self.index.chunks[r].doc_id])))]
        if len(members) <= 1:
            return passage
        dated = [r for r in members if self._published(r)]
        chosen = passage.chunk_id
        if dated:
            best = (max if scope and scope.latest else min)(self._published(r) for r in dated)
            if self._published(passage.chunk_id) != best:
                chosen = next(r for r in dated if self._published(r) == best)
        representative = passage if chosen == passage.chunk_id else passage_of(
            self.index.chunks[chosen], passage.rank, {**passage.scores, "dense_similarity": round(
                float(self.index.vectors[chosen] @ query), 4)}, self.index.documents)
        others = {self.index.chunks[r].doc_id for r in members} - {representative.doc_id}
        representative.also_in = [self._article(doc_id) for doc_id in sorted(others)]
        return representative

    def _published(self, row: int) -> str:
        return published_of(self.index.documents[self.index.chunks[row].doc_id])

    def _article(self, doc_id: str) -> dict[str, str]:
        entry = self.index.documents[doc_id]
        return {"doc_id": doc_id, "title": str(entry.get("title") or doc_id), "published": published_of(entry),
                "outlet": outlet_of(entry)}

    @staticmethod
    def _newest_first(passages: list[Passage], scope: TimeScope | None) -> list[Passage]:
        """For a question that asks for the latest: the passages about as relevant as the best one (within
        CLOSE_RELEVANCE of its similarity) newest first, undated last, then the others; ranks renumbered."""
        if not scope or not scope.latest or not passages:
            return passages
        best = max(p.relevance for p in passages)
        close = [p for p in passages if p.relevance >= best - CLOSE_RELEVANCE]
        ordered = sorted(close, key=lambda p: p.published, reverse=True)  # stable: equal dates keep their order
        ordered += [p for p in passages if p.relevance < best - CLOSE_RELEVANCE]
        for rank, passage in enumerate(ordered, start=1):
            passage.rank = rank
        return ordered

    @staticmethod
    def _figures(question: str) -> set[str]:
        return {t for t in lexical_tokens(question) if t[0].isdigit()}

    def _figure_hits(self, i: int, figures: set[str]) -> int:
        if not figures:
            return 0
        return len(figures & set(lexical_tokens(self.index.chunks[i].text)))

    def _passage(self, i: int, rank: int, similarity: dict[int, float], dense_rank: dict[int, int],
                 bm25: dict[int, float], fused: dict[int, float], rerank: dict[int, float]) -> Passage:
        return passage_of(self.index.chunks[i], rank, {
            "dense_similarity": round(float(similarity[i]), 4), "dense_rank": dense_rank.get(i),
            "bm25": round(bm25[i], 4) if i in bm25 else None, "fused": round(fused[i], 5),
            "rerank": round(rerank[i], 4) if i in rerank else None}, self.index.documents)

    def document_passages(self, doc_id: str, retrieved: list[Passage] | None = None) -> list[Passage]:
        """Every chunk of a document, in order, as Passages; those in `retrieved` keep their rank and scores."""
        known = {p.chunk_id: p for p in retrieved or []}
        chunks = sorted((c for c in self.index.chunks if c.doc_id == doc_id), key=lambda c: c.chunk_index)
        return [known.get(c.id) or passage_of(c, documents=self.index.documents) for c in chunks]


def passage_of(chunk: Chunk, rank: int = 0, scores: dict[str, float | None] | None = None,
               documents: dict[str, dict] | None = None) -> Passage:
    entry = (documents or {}).get(chunk.doc_id, {})
    return Passage(chunk_id=chunk.id, doc_id=chunk.doc_id, title=chunk.title, text=chunk.raw, start=chunk.start,
                   end=chunk.end, paragraphs=chunk.paragraphs, rank=rank, scores=scores or {},
                   published=published_of(entry), outlet=outlet_of(entry))


def published_of(entry: dict) -> str:
    """An indexed article's publication date (ISO) from its manifest entry, "" when unknown."""
    return str(entry.get("published") or "")


def outlet_of(entry: dict) -> str:
    return str(entry.get("outlet") or "")


_retrievers: Loaded[Retriever] = Loaded()


def get_retriever(settings: Settings, corpus: Path | None = None) -> Retriever:
    """A retriever over the current index of a corpus, rebuilt when the index on disk changes."""
    from rag.indexing.build import current_build, index_folder

    folder = index_folder(settings, corpus)
    key = (folder.resolve(), settings.embedder, settings.embedder_backend, settings.embedder_precision,
           settings.chunk_tokens, settings.chunk_overlap_tokens,
           settings.index_type, settings.vector_store, settings.milvus_uri, settings.dense, settings.bm25,
           settings.reranker, settings.rrf_k, settings.candidates, settings.min_relevance, settings.bm25_weight,
           settings.figure_rule, settings.fold_copies)

    def stale(kept: Retriever) -> bool:  # asked under the key's lock: a retriever another thread just made is kept
        build = current_build(folder)
        return build is None or kept.index.folder != build

    return _retrievers.get(key, lambda: Retriever(open_index(settings, corpus), settings), stale)


def release(settings: Settings, corpus: PathArg | None = None) -> int:
    """Drop the retrievers (and so the loaded index) kept for a corpus; the models stay loaded. How many."""
    from rag.indexing.build import index_folder

    folder = index_folder(settings, corpus).resolve()
    return _retrievers.drop(lambda key: isinstance(key, tuple) and key[0] == folder)


def retrieve(question: str, k: int | None = None, settings: Settings | None = None,
             corpus: PathArg | None = None, since: Any = None, until: Any = None) -> list[Passage]:
    """Ranked passages for a question, from the (auto-updated) index of the corpus (default: `corpus_dir`).

    `k` passages, from 1 to MAX_RETRIEVE_K (50; default: the `top_k` setting); `since` / `until` (a date or
    "YYYY-MM-DD", inclusive) keep only articles published in that range. A bad argument raises a BadInput naming
    it, before the index is opened.

    >>> passages = rag.retrieve("chip exports", k=2)
    >>> len(passages), passages[0].doc_id
    (2, 'south-korea-ai-investment.txt')
    """
    if not isinstance(question, str) or not question.strip():
        raise BadArgument(f"question: expected a non-empty string, got {question!r:.80}")
    if k is not None:
        bounded_int(k, "k", 1, MAX_RETRIEVE_K)
    folder = optional_path(corpus, "corpus")
    scope = request_scope(since, until, TimeScope())
    return get_retriever(settings_or_default(settings), folder).run(question, k, scope)
