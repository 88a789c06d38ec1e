"""Every constant chosen by measurement, with the command and the data it was chosen on (docs/results.md).

Nothing here is fitted at run time. A value chosen on data was chosen on tune data only: the project's tune split
and RGB positions 50-99 (positions 0-49 are reserved for an outside check and never used to choose anything).
The fitted answer-or-refuse decision is data, not a constant: rag/answering/decisions/<generator>.json, written
by `python -m tools.fit_decision` (rag.answering.decision reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- retrieval, per embedder


@dataclass(frozen=True)
class Calibration:
    """The retrieval choices that depend on the embedder, measured per embedder with `rag eval --retrieval-only`:
    similarities differ in scale between models, and a stronger dense stage needs less of BM25's vote."""

    min_relevance: float  # below this cosine similarity of the best passage, refuse without the generator
    bm25_weight: float  # BM25's vote in rank fusion, relative to the dense ranking's 1
    figure_rule: bool  # a passage holding every figure the question names goes first


# minilm: calibrated on the project's set. The others: bm25_weight and figure_rule chosen on RGB positions 50-99
# and the project's tune split (best summed hit@1, then MRR@5); min_relevance between the most related off-topic
# question and the least related answerable one of the tune split (`rag eval --retrieval-only`). EmbeddingGemma's
# were chosen again once its chunking and precision were.
CALIBRATIONS: dict[str, Calibration] = {
    "minilm": Calibration(min_relevance=0.20, bm25_weight=1.0, figure_rule=True),
    "mpnet": Calibration(min_relevance=0.20, bm25_weight=0.5, figure_rule=True),
    "embeddinggemma": Calibration(min_relevance=0.16, bm25_weight=0.0, figure_rule=False),
    "nomic": Calibration(min_relevance=0.57, bm25_weight=0.1, figure_rule=True),
}
UNCALIBRATED = CALIBRATIONS["minilm"]  # a local or hub embedder nobody measured: today's behaviour

# ---------------------------------------------------------------- chunking and precision, per embedder

# Chunk sizes (tokens, overlap) in each embedder's own tokenizer, chosen on the project's tune split with
# `rag eval --retrieval-only`: EmbeddingGemma's tokenizer needs fewer tokens for the same text.
CHUNK_SIZES: dict[str, tuple[int, int]] = {"embeddinggemma": (240, 48)}
DEFAULT_CHUNKING = (160, 32)  # every other embedder

# The precision each embedder runs at by default, kept only where it holds hit@k on the tune queries
# (`python -m tools.bench --embedders`); any other embedder runs at float32.
PRECISIONS = {"embeddinggemma": "bfloat16"}

# ---------------------------------------------------------------- vector search

# HNSW settings measured by `python -m tools.bench_scale` (docs/scaling.md): recall@10 >= 0.95 at a million
# passages. The switch from exact search to HNSW (`hnsw_from_passages`, 250,000) is a setting measured there too.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 100, 512

# ---------------------------------------------------------------- the checks' threshold rule (no fitted decision)

# The judge's P(Yes) plus SENTENCE_WEIGHT x the best sentence support must reach the generator's threshold. Both
# chosen on the project's tune split (`rag eval --split tune`): the judge alone separates worse. The 0.5B model's
# judge barely separates (AUC 0.63 on the tune split, P(Yes) never above 0.25), so it has no threshold: its answers
# are not verified unless `verify_threshold` is set.
SENTENCE_WEIGHT = 0.1
CALIBRATED_THRESHOLDS = {"qwen2.5-coder-1.5b": 0.59}

# ---------------------------------------------------------------- the fitted decision's state probe

# The generator layer (of 28, from 0) whose output where the answer prompt ends feeds the decision's state probe:
# chosen out-of-fold on the tune data among rag.answering.decision.STUDY_LAYERS (`python -m tools.fit_decision
# --states`); the packaged decision file was fitted on it.
ANSWER_LAYER = 18

# ---------------------------------------------------------------- near-copies of passages (wire stories reprinted)

# MinHash over 3-word shingles of a passage's lexical tokens, 128 permutations; two passages are near-copies when
# their estimated Jaccard similarity reaches COPY_THRESHOLD (rag/indexing/copies.py); an article is a copy of another
# when COPY_SHARE of its text is in passages grouped with the other's. Chosen with `python -m tools.study_copies` on
# the 181 article bodies of shared/benchmarks/article-extraction (1,832 passages, MiniLM chunking) and synthetic
# reprints of each (credit line, dateline, one or two words changed in half the sentences, a sentence dropped, a
# copyright line): passages of different outlets' reports, same-story pages included (WeWork layoffs, the Inner
# Mongolia plague, NASA's lunar landers, Europa's water vapour, ...), reach at most 0.336 (two earnings reports
# quoting the same statement; p99.9 of same-story pairs 0.265), while a reprint's passage has a median of 0.71 with
# its closest counterpart. At 0.5, 3.9 standard errors of the 128-permutation estimate above that maximum (a false
# fold hides a different report; a missed one only leaves today's duplicate), 79% of those reprint passages fold
# (87% with lighter edits), article_copies names the reprint for 138 of 181 pages and no other page, and no group
# joins passages of two outlets (5 join two pages of one site: its own footer or "about us" text). 2- and 4-word
# shingles fold about as many at the same margin; 64 permutations (half the 512 bytes a passage) would need about
# 0.57 for it and fold 70% instead of 79%.
COPY_THRESHOLD = 0.5
COPY_PERMS = 128
COPY_SHINGLE_WORDS = 3
COPY_SHARE = 0.5

# ---------------------------------------------------------------- saying that articles disagree

# Two replies that differ are a disagreement only when each comes from a sentence stating the answer to the question
# itself: one naming every figure of the question and at least this share of its content words
# (rag.answering.conflicts.states_it). Chosen on RGB positions 50-99 (`rag eval --benchmark rgb --queries 50-99`,
# with and without `--conflict`): without the rule 11 of 50 normal answers said the articles disagree (the winner
# named where the runner-up was asked, another film's cast) and 12 of 45 conflict queries were answered with both
# reports cited; with it 1 of 50 and 6 of 45 (docs/results.md).
STATEMENT_COVERAGE = 0.5
