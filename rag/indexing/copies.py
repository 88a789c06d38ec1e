"""Near-copies of passages (a wire story reprinted by several outlets with small edits): MinHash signatures of each
chunk's words, grouped by locality-sensitive hashing at index time, so retrieval can keep one passage per group."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache

import numpy as np

from rag.calibration import COPY_PERMS, COPY_SHARE, COPY_SHINGLE_WORDS, COPY_THRESHOLD
from rag.text import lexical_tokens

# Signatures are kept in builds and compared with those of later builds: the hash family is pinned, never a library
# default. Changing any of these (or the calibration's perms or shingle words) makes old signatures incomparable:
# signature_name() names them in the manifest, and a build whose name differs has its signatures made again.
SCHEME = "affine32"
SEED = 1
EMPTY = np.uint32(0xFFFFFFFF)  # every value of a text with no words: such a row is never grouped
# Members of one LSH bucket are compared with this many neighbours (in row order) each: every pair in a bucket of up
# to WINDOW + 1 rows, as MinHashLSH would; a huge bucket (boilerplate repeated in thousands of passages) costs
# WINDOW comparisons a row instead of all pairs, and its copies still end up in one group through their neighbours.
WINDOW = 8
BLOCK_ROWS = 65_536  # rows read at a time from a memory-mapped signature file
PAIR_BLOCK = 8_192  # candidate pairs compared at a time (both rows' signatures: 8 MB at 128 permutations)
# An article names at most this many of its near-copies (those sharing the most of it): a wire story run by hundreds
# of outlets would otherwise list hundreds of names in each of hundreds of manifest entries. Retrieval counts a
# passage's copies from copies.npy, not from these lists.
NAMED_COPIES = 20
# MinHashLSH's weights of (false positives, false negatives) when it lays out its bands: every candidate is checked
# against the threshold afterwards, so a false positive costs one comparison while a false negative loses a fold.
# At 0.5 and 128 permutations the default (0.5, 0.5) makes a pair at J = 0.5 a candidate 55% of the time, these 87%
# (0.6: 87% and 99%).
LSH_WEIGHTS = (0.1, 0.9)


def signature_name(perms: int = COPY_PERMS, words: int = COPY_SHINGLE_WORDS) -> str:
    """What a signature depends on: two signatures are comparable only under the same name."""
    return f"minhash-{SCHEME}-seed{SEED}-{perms}perms-{words}words"


def shingles(text: str, words: int = COPY_SHINGLE_WORDS) -> list[bytes]:
    """Word n-grams of the text's lexical tokens: lower-case words and plain numbers, so a reprint's changed case,
    quotes, punctuation or "2,047" vs "2047" do not count as edits. A text shorter than n words is one shingle."""
    tokens = lexical_tokens(text)
    if len(tokens) <= words:
        return [" ".join(tokens).encode()] if tokens else []
    return [" ".join(tokens[i:i + words]).encode() for i in range(len(tokens) - words + 1)]


@lru_cache(maxsize=4)
def _permutations(perms: int) -> tuple[np.ndarray, np.ndarray]:
    """Made once per process (from the fixed seed): each signature then costs its hashing only."""
    from datasketch import MinHash

    return MinHash(num_perm=perms, seed=SEED, scheme=SCHEME).permutations


def signature(text: str, perms: int = COPY_PERMS, words: int = COPY_SHINGLE_WORDS) -> np.ndarray:
    """The MinHash signature (uint32, `perms` values) of a chunk's normalised text (`Chunk.text`)."""
    from datasketch import MinHash

    minhash = MinHash(num_perm=perms, seed=SEED, scheme=SCHEME, permutations=_permutations(perms))
    found = shingles(text, words)
    if found:
        minhash.update_batch(found)
    return np.asarray(minhash.hashvalues, dtype=np.uint32)


def signatures(texts: Iterable[str], perms: int = COPY_PERMS, words: int = COPY_SHINGLE_WORDS) -> np.ndarray:
    """One signature row per text: uint32 [len(texts), perms]."""
    rows = [signature(text, perms, words) for text in texts]
    return np.stack(rows) if rows else np.zeros((0, perms), np.uint32)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The share of equal values of rows `a` and `b` (aligned arrays, or one row each)."""
    return np.mean(np.asarray(a) == np.asarray(b), axis=-1)


def band_layout(threshold: float, perms: int) -> tuple[int, int]:
    """(bands, rows per band): datasketch's MinHashLSH layout for this threshold (weighted by LSH_WEIGHTS), so the
    candidates below are the pairs a MinHashLSH query would return."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=perms, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


def copy_groups(signatures: np.ndarray, threshold: float = COPY_THRESHOLD) -> np.ndarray:
    """Per row, its group: the smallest row id of the rows it is a near-copy of, directly or through others (a row
    alone is its own group). Candidate pairs share a MinHashLSH band; each is kept when its estimated Jaccard
    similarity is at least `threshold`; groups are the connected sets of kept pairs (union-find, in numpy: a pair
    whose rows are in one group already is not compared again).

    The bands are hashed with numpy rather than inserted into a `MinHashLSH`: the same buckets (the same band
    layout, and a band's values equal), 0.5 s for 100,000 rows where datasketch's Python inserts and queries took
    17 s, and 8 s for a million (`python -m tools.study_copies --million`). `signatures` may be memory-mapped: it is
    read a block of rows at a time, and memory holds a few arrays of one value a row."""
    groups = np.arange(len(signatures), dtype=np.int64)
    for first, second in candidate_pairs(signatures, threshold):
        apart = groups[first] != groups[second]
        first, second = first[apart], second[apart]
        similar = _similar(signatures, first, second, threshold)
        if similar.any():
            _unite(groups, first[similar], second[similar])
    return groups


def candidate_pairs(signatures: np.ndarray, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row pairs that share a band's values (two aligned int64 arrays, a band and window step at a time; a pair
    may come more than once); rows with no words take no part."""
    rows = len(signatures)
    if rows < 2:
        return
    bands, width = band_layout(threshold, signatures.shape[1])
    empty = _empty_rows(signatures)
    for band in range(bands):
        keys = _band_keys(signatures, band * width, (band + 1) * width)
        keys[empty] = np.arange(int(empty.sum()), dtype=np.uint64) ^ np.uint64(0x9E3779B97F4A7C15)  # all distinct
        order = np.argsort(keys, kind="stable")  # within a bucket, in row order
        ordered = keys[order]
        del keys
        for step in range(1, min(WINDOW, rows - 1) + 1):
            same = np.flatnonzero(ordered[step:] == ordered[:-step])
            if len(same):
                yield order[same].astype(np.int64), order[same + step].astype(np.int64)


def _band_keys(signatures: np.ndarray, start: int, end: int) -> np.ndarray:
    """A 64-bit hash of each row's values in columns [start, end): equal values, equal keys (a rare collision
    of unequal ones only adds a candidate, which the Jaccard check then turns down)."""
    keys = np.empty(len(signatures), np.uint64)
    for first in range(0, len(signatures), BLOCK_ROWS):
        block = np.asarray(signatures[first:first + BLOCK_ROWS, start:end], dtype=np.uint64)
        key = np.full(len(block), 0xCBF29CE484222325, np.uint64)
        for column in block.T:
            key = (key ^ column) * np.uint64(0x100000001B3)  # FNV-1a over whole values
            key ^= key >> np.uint64(29)
        keys[first:first + len(block)] = key
    return keys


def _empty_rows(signatures: np.ndarray) -> np.ndarray:
    empty = np.zeros(len(signatures), bool)
    for first in range(0, len(signatures), BLOCK_ROWS):
        empty[first:first + BLOCK_ROWS] = np.all(np.asarray(signatures[first:first + BLOCK_ROWS]) == EMPTY, axis=1)
    return empty


def _similar(signatures: np.ndarray, first: np.ndarray, second: np.ndarray, threshold: float) -> np.ndarray:
    similar = np.zeros(len(first), bool)
    for start in range(0, len(first), PAIR_BLOCK):
        end = start + PAIR_BLOCK
        similar[start:end] = estimated_jaccard(signatures[first[start:end]], signatures[second[start:end]]) >= threshold
    return similar


def _unite(groups: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    """Join the groups of each pair's rows, in place. Invariant: each row holds the smallest row of its group, and
    that row holds itself; a joined group's larger root is pointed at the smaller one, then every row is pointed
    at its root again."""
    while len(first):
        low, high = np.minimum(groups[first], groups[second]), np.maximum(groups[first], groups[second])
        np.minimum.at(groups, high, low)
        while not np.array_equal(pointed := groups[groups], groups):
            groups[:] = pointed
        apart = groups[first] != groups[second]  # a root pointed at two lower ones joined only one of them
        first, second = first[apart], second[apart]


def copies_summary(groups: np.ndarray) -> dict[str, int]:
    """Passages in groups of two or more, and how many such groups."""
    sizes = np.bincount(groups, minlength=len(groups)) if len(groups) else np.zeros(0, np.int64)
    shared = sizes >= 2
    return {"folded_passages": int(sizes[shared].sum()), "groups": int(shared.sum())}


def article_copies(doc_ids_per_row: Sequence[str], groups: np.ndarray, share: float = COPY_SHARE,
                   sizes: Sequence[int] | None = None) -> dict[str, list[str]]:
    """Each document with near-copies -> the other documents it is a near-copy of (sorted, at most NAMED_COPIES):
    A is a copy of B when at least `share` of A's passages are in a group with a passage of B. With `sizes` (each
    passage's length) the share is of A's text: a wire's one-line credit or copyright passage, the same in all its
    stories, then cannot make a short story a copy of every other. Not symmetric: an excerpt is a copy of the full
    report, not the other way round. Documents with no copies are left out. A group's passages are compared with
    the first NAMED_COPIES + 1 documents of the group only (in row order), so a story copied by thousands costs
    thousands of comparisons, not millions."""
    if not len(groups):
        return {}
    weight = list(sizes) if sizes is not None else [1] * len(groups)
    total: Counter[str] = Counter()
    for doc, size in zip(doc_ids_per_row, weight, strict=True):
        total[doc] += size
    members: dict[int, Counter[str]] = defaultdict(Counter)  # group -> its documents (in row order) and their share
    for row in np.flatnonzero(np.bincount(groups, minlength=len(groups))[groups] >= 2).tolist():
        members[int(groups[row])][doc_ids_per_row[row]] += weight[row]
    shared: dict[str, Counter[str]] = defaultdict(Counter)  # A -> B -> how much of A is in a group with B
    for documents in members.values():
        heads = list(itertools.islice(documents, NAMED_COPIES + 1))
        for a, amount in documents.items():
            for b in heads:
                if b != a:
                    shared[a][b] += amount
    copies = {}
    for a, found in shared.items():
        named = [b for b, amount in found.most_common() if amount >= share * total[a]]
        if named:
            copies[a] = sorted(named[:NAMED_COPIES])
    return copies
