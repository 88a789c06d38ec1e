"""Finding the passages for a question: dense (the vector store) and BM25 (rag/indexing/bm25.py) results, rank-fused,
optionally re-ranked."""

from __future__ import annotations

from pathlib import Path

from rag.calibration import CALIBRATIONS, UNCALIBRATED, Calibration
from rag.indexing.bm25 import BM25Stage
from rag.indexing.build import LoadedIndex, open_index
from rag.loaded import Loaded
from rag.models.embedders import get_embedder
from rag.settings import Settings
from rag.text import lexical_tokens
from rag.types import Chunk, Passage


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

    def run(self, question: str, k: int | None = None) -> list[Passage]:
        k = k or self.settings.top_k
        n = max(self.settings.candidates, k)
        query = self.embedder.embed_query(question)
        rankings: list[list[int]] = []
        weights: list[float] = []
        dense_rank: dict[int, int] = {}
        bm25_scores: dict[int, float] = {}
        if self.settings.dense:
            ranking = [i for i, _ in self.index.store.search(query, n)]
            dense_rank = {i: r for r, i in enumerate(ranking, start=1)}
            rankings.append(ranking)
            weights.append(1.0)
        if self.bm25 is not None:
            hits = self.bm25.search(question, n)
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
        return [self._passage(i, rank, similarity, dense_rank, bm25_scores, fused, rerank)
                for rank, i in enumerate(order[:k], start=1)]

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
            "rerank": round(rerank[i], 4) if i in rerank else None})

    def document_passages(self, doc_id: str, retrieved: list[Passage] | None = None) -> list[Passage]:
        """Every chunk of a document, in order, as Passages; those in `retrieved` keep their rank and scores."""
        known = {p.chunk_id: p for p in retrieved or []}
        chunks = sorted((c for c in self.index.chunks if c.doc_id == doc_id), key=lambda c: c.chunk_index)
        return [known.get(c.id) or passage_of(c) for c in chunks]


def passage_of(chunk: Chunk, rank: int = 0, scores: dict[str, float | None] | None = None) -> Passage:
    return Passage(chunk_id=chunk.id, doc_id=chunk.doc_id, title=chunk.title, text=chunk.raw, start=chunk.start,
                   end=chunk.end, paragraphs=chunk.paragraphs, rank=rank, scores=scores or {})


_retrievers: Loaded[Retriever] = Loaded()


def get_retriever(settings: Settings, corpus: Path | None = None) -> Retriever:
    """A retriever over the current index of a corpus, rebuilt when the index on disk changes."""
    from rag.indexing.build import current_build, index_folder

    folder = index_folder(settings, corpus)
    key = (folder.resolve(), settings.embedder, settings.chunk_tokens, settings.chunk_overlap_tokens,
           settings.index_type, settings.vector_store, settings.milvus_uri, settings.dense, settings.bm25,
           settings.reranker, settings.rrf_k, settings.candidates, settings.min_relevance, settings.bm25_weight,
           settings.figure_rule)

    def stale(kept: Retriever) -> bool:  # asked under the key's lock: a retriever another thread just made is kept
        build = current_build(folder)
        return build is None or kept.index.folder != build

    return _retrievers.get(key, lambda: Retriever(open_index(settings, corpus), settings), stale)


def retrieve(question: str, k: int | None = None, settings: Settings | None = None,
             corpus: Path | None = None) -> list[Passage]:
    """Ranked passages for a question, from the (auto-updated) index of the corpus."""
    from rag.settings import load_settings

    settings = settings or load_settings()
    return get_retriever(settings, corpus).run(question, k)
