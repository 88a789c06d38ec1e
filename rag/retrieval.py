"""Finding the passages for a question: dense (the vector store) and BM25 (rag/lexical.py) results, rank-fused,
optionally re-ranked."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.index import LoadedIndex, open_index
from rag.ingest import Chunk
from rag.lexical import BM25Stage
from rag.models import get_embedder
from rag.settings import Settings
from rag.text import lexical_tokens


@dataclass
class Passage:
    """A retrieved chunk with the score of every stage that saw it (None where a stage is off)."""

    chunk_id: int
    doc_id: str
    title: str
    text: str  # as in the article (display)
    start: int
    end: int
    paragraphs: tuple[int, int]
    rank: int = 0
    scores: dict[str, float | None] = field(default_factory=dict)

    @property
    def relevance(self) -> float:
        """Cosine similarity of question and passage: the score refusal decisions use."""
        return float(self.scores.get("dense_similarity") or 0.0)

    def to_json(self) -> dict:
        data = asdict(self)
        data["paragraphs"] = list(self.paragraphs)
        return data


class Reranker:
    """A sentence-transformers CrossEncoder re-scoring the fused candidates (only when one is named)."""

    def __init__(self, name: str, settings: Settings) -> None:
        from sentence_transformers import CrossEncoder

        self.name = name
        self._model = CrossEncoder(name, device=settings.device, local_files_only=True)

    def scores(self, question: str, texts: list[str]) -> list[float]:
        return [float(s) for s in self._model.predict([(question, t) for t in texts], show_progress_bar=False)]


@dataclass(frozen=True)
class Calibration:
    """The retrieval choices that depend on the embedder, measured per embedder with `rag eval --retrieval-only`
    (README, "Retrieval"): similarities differ in scale between models, and a stronger dense stage needs less of
    BM25's vote."""

    min_relevance: float  # below this cosine similarity of the best passage, refuse without the generator
    bm25_weight: float  # BM25's vote in rank fusion, relative to the dense ranking's 1
    figure_rule: bool  # a passage holding every figure the question names goes first


# minilm: calibrated on the project's set (README). The others: bm25_weight and figure_rule chosen on RGB positions
# 50-99 and the project's tune split (best summed hit@1, then MRR@5); min_relevance between the most related
# off-topic question and the least related answerable one of the tune split (`rag eval --retrieval-only`).
# EmbeddingGemma's were chosen again once its chunking and precision were (README, "Fusion for EmbeddingGemma").
CALIBRATIONS: dict[str, Calibration] = {
    "minilm": Calibration(min_relevance=0.20, bm25_weight=1.0, figure_rule=True),
    "mpnet": Calibration(min_relevance=0.20, bm25_weight=0.5, figure_rule=True),
    "embeddinggemma": Calibration(min_relevance=0.16, bm25_weight=0.0, figure_rule=False),
    "nomic": Calibration(min_relevance=0.57, bm25_weight=0.1, figure_rule=True),
}
UNCALIBRATED = CALIBRATIONS["minilm"]  # a local or hub embedder nobody measured: today's behaviour


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


_retrievers: dict[tuple, Retriever] = {}
_lock = threading.Lock()


def get_retriever(settings: Settings, corpus: Path | None = None) -> Retriever:
    """A retriever over the current index of a corpus, rebuilt when the index on disk changes."""
    from rag.index import current_build, index_folder

    folder = index_folder(settings, corpus)
    key = (folder.resolve(), settings.embedder, settings.chunk_tokens, settings.chunk_overlap_tokens,
           settings.index_type, settings.vector_store, settings.milvus_uri, settings.dense, settings.bm25,
           settings.reranker, settings.rrf_k, settings.candidates, settings.min_relevance, settings.bm25_weight,
           settings.figure_rule)
    with _lock:
        cached = _retrievers.get(key)
        build = current_build(folder)
        if cached is None or build is None or cached.index.folder != build:
            _retrievers[key] = Retriever(open_index(settings, corpus), settings)
        return _retrievers[key]


def retrieve(question: str, k: int | None = None, settings: Settings | None = None,
             corpus: Path | None = None) -> list[Passage]:
    """Ranked passages for a question, from the (auto-updated) index of the corpus."""
    from rag.settings import load_settings

    settings = settings or load_settings()
    return get_retriever(settings, corpus).run(question, k)
