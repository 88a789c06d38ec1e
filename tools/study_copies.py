"""Choosing the near-copy threshold (rag/calibration.py COPY_*) on real article bodies: how similar a passage is to
its own reprint (synthetic wire copies with a reprint's small edits) and to the passages of other reports, on the
same story by other outlets in particular; then how long signatures and grouping take.

    python -m tools.study_copies [--ground-truth PATH] [--million]

The article bodies are read in place from ../shared/benchmarks/article-extraction/ground-truth.json (181 pages,
key -> {"articleBody", "url"}) and chunked by the project's chunker with MiniLM's tokenizer (the default chunking).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from rag.calibration import COPY_PERMS, COPY_SHARE, COPY_SHINGLE_WORDS, COPY_THRESHOLD
from rag.indexing.copies import article_copies, band_layout, copy_groups, estimated_jaccard, signatures
from rag.ingest.chunking import chunk_document, chunking
from rag.settings import Settings
from rag.types import Chunk, Document

GROUND_TRUTH = Path(__file__).resolve().parents[1].parent / "shared/benchmarks/article-extraction/ground-truth.json"
# Pages of the benchmark on the same story by different outlets (URL fragments): different reports, never to fold.
STORIES = {
    "WeWork layoffs": ("wework",),
    "Inner Mongolia plague": ("plague",),
    "NASA lunar landers": ("moon-lander", "lunar-lander", "commercial-moon-shot"),
    "Europa water vapour": ("europa", "water-plumes", "water-vapor"),
    "Google Stadia": ("stadia",),
    "feather duvet lung": ("duvet",),
    "Doobie Brothers reunion": ("doobie",),
    "South Dakota meth campaign": ("meth",),
    "Fort Worth kidnapping rescue": ("fort-worth", "kidnapped-fort"),
    "hibernating astronauts": ("hibernat",),
    "Home Depot earnings": ("home-depot",),
    "threat to Ilhan Omar": ("ilhan", "threatening-kill", "pleads-guilty-to-thr"),
    "Asian markets": ("asian-shares", "asian-market"),
}
# A reprint's edits, by strength: the share of sentences with words changed, how many words each, sentences dropped.
EDITS = {"light": (0.25, (1, 1), 1), "typical": (0.5, (1, 2), 1), "heavy": (1.0, (2, 3), 2)}
OUTLETS = ("The Associated Press", "Reuters", "Agence France-Presse", "Bloomberg", "The Canadian Press")
FILLERS = ("reportedly", "also", "now", "officially", "still", "recently", "locally", "largely")
SWAPS = {"said": "says", "says": "said", "percent": "%", "which": "that", "that": "which", "but": "however",
         "about": "around", "more than": "over", "Monday": "on Monday", "will": "would"}
GRID_WORDS = (2, 3, 4, 5)
GRID_PERMS = (64, 128)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.91, 0.05))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    parser.add_argument("--million", action="store_true", help="also time grouping at 1,000,000 rows")
    args = parser.parse_args()
    pages = json.loads(args.ground_truth.read_text(encoding="utf-8"))
    count_tokens = _token_counter()
    originals = {key: _chunks(key, page["articleBody"], count_tokens) for key, page in pages.items()}
    originals = {key: chunks for key, chunks in originals.items() if chunks}
    urls = {key: pages[key]["url"] for key in originals}
    copies = {level: {key: _chunks(key + "~copy", reprint(page["articleBody"], level, random.Random(key)),
                                   count_tokens) for key, page in pages.items() if key in originals}
              for level in EDITS}
    print(f"{len(originals)} pages, {sum(map(len, originals.values()))} passages (MiniLM tokens, chunking "
          f"{chunking(Settings(embedder='minilm'))})\n")
    _grid(originals, copies, urls)
    print(f"\n== chosen: {COPY_SHINGLE_WORDS}-word shingles, {COPY_PERMS} permutations, threshold {COPY_THRESHOLD}, "
          f"share {COPY_SHARE}\n")
    _detail(originals, copies, urls, COPY_SHINGLE_WORDS, COPY_PERMS)
    _end_to_end(originals, copies, urls)
    _timings(originals, args.million)


# ---------------------------------------------------------------- data


def _token_counter() -> Callable[[str], int]:
    from rag.models.embedders import get_embedder

    return get_embedder(Settings(embedder="minilm")).count_tokens


def _chunks(key: str, body: str, count_tokens: Callable[[str], int]) -> list[Chunk]:
    document = Document(doc_id=key, title="", text=body, path="", sha256=key)
    return chunk_document(document, count_tokens, *chunking(Settings(embedder="minilm")))


def reprint(body: str, level: str, rng: random.Random) -> str:
    """The article as another outlet runs a wire story: a credit line on top, a dateline, words changed in some
    sentences (house style, a word added or cut), sentences dropped for length, a closing line."""
    changed, (fewest, most), dropped = EDITS[level]
    paragraphs = [_sentences(p) for p in body.split("\n") if p.strip()]
    for _ in range(dropped):
        where = [(i, j) for i, p in enumerate(paragraphs) for j in range(len(p))]
        if len(where) > 3:
            i, j = rng.choice(where[1:])
            del paragraphs[i][j]
    edited = [" ".join(_edit(s, rng, fewest, most) if rng.random() < changed else s for s in p)
              for p in paragraphs if p]
    outlet = rng.choice(OUTLETS)
    if edited:
        edited[0] = f"NEW YORK ({outlet}) — {edited[0]}"
    return "\n".join([f"By staff and wire reports, {outlet}", *edited,
                      f"Copyright 2019 {outlet}. All rights reserved. This material may not be republished."])


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if s]


def _edit(sentence: str, rng: random.Random, fewest: int, most: int) -> str:
    words = sentence.split(" ")
    for _ in range(rng.randint(fewest, most)):
        if len(words) < 4:
            break
        at = rng.randrange(1, len(words))
        swap = SWAPS.get(words[at])
        choice = rng.random()
        if swap:
            words[at] = swap
        elif choice < 0.4:
            words.insert(at, rng.choice(FILLERS))
        elif choice < 0.7:
            del words[at]
        else:
            words[at] = words[at][::-1]  # a word replaced by one the original does not hold
    return " ".join(words)


def _story(url: str) -> str | None:
    return next((story for story, marks in STORIES.items() if any(m in url.lower() for m in marks)), None)


# ---------------------------------------------------------------- measurements


def _signed(chunks: dict[str, list[Chunk]], words: int, perms: int) -> dict[str, np.ndarray]:
    return {key: signatures([c.text for c in found], perms, words) for key, found in chunks.items()}


def copy_similarities(originals: dict[str, np.ndarray], copies: dict[str, np.ndarray]) -> np.ndarray:
    """Each original passage's estimated Jaccard with the closest passage of its reprint (a reprint's passages
    need not start where the original's do)."""
    best = [estimated_jaccard(row[None, :], copies[key]).max() for key, rows in originals.items() for row in rows
            if len(copies[key])]
    return np.asarray(best)


def _host(url: str) -> str:
    return urlparse(url).netloc.lower().removeprefix("www.")


def distinct_similarities(signed: dict[str, np.ndarray], urls: dict[str, str]) -> dict[str, np.ndarray]:
    """Every pair of passages of different pages: of different outlets, of those on the same story, and of two
    pages of one site (whose shared footers and "about us" paragraphs are the same text, not different reports)."""
    found: dict[str, list[np.ndarray]] = {"different outlets": [], "same story": [], "same site": []}
    for a, b in itertools.combinations(signed, 2):
        pair = np.mean(signed[a][:, None, :] == signed[b][None, :, :], axis=2).ravel()
        if _host(urls[a]) == _host(urls[b]):
            found["same site"].append(pair)
            continue
        found["different outlets"].append(pair)
        if _story(urls[a]) and _story(urls[a]) == _story(urls[b]):
            found["same story"].append(pair)
    return {name: np.concatenate(pairs) if pairs else np.zeros(0) for name, pairs in found.items()}


def closest_pages(signed: dict[str, np.ndarray], urls: dict[str, str], count: int = 6) -> list[tuple[float, str, str]]:
    """The pairs of pages of different outlets with the most similar passages."""
    closest = [(float(np.mean(signed[a][:, None, :] == signed[b][None, :, :], axis=2).max()), urls[a], urls[b])
               for a, b in itertools.combinations(signed, 2) if _host(urls[a]) != _host(urls[b])]
    return sorted(closest, reverse=True)[:count]


def _grid(originals: dict, copies: dict, urls: dict) -> None:
    marks = (0.4, 0.45, 0.5, 0.55, 0.6)
    print("== shingle words x permutations: the highest similarity of passages of different outlets (all; same "
          "story), and the share of reprint passages at or above t (light / typical / heavy edits)")
    print(f"{'':>18} {'outlets':>8} {'story':>6}   " + "   ".join(f"t={t:<14}" for t in marks))
    for words, perms in itertools.product(GRID_WORDS, GRID_PERMS):
        signed = _signed(originals, words, perms)
        distinct = distinct_similarities(signed, urls)
        lows = [copy_similarities(signed, _signed(found, words, perms)) for found in copies.values()]
        print(f"{words} words {perms:>3} perms {distinct['different outlets'].max():>8.3f} "
              f"{distinct['same story'].max():>6.3f}   " +
              "   ".join("/".join(f"{np.mean(v >= t):.2f}" for v in lows) for t in marks))


def _detail(originals: dict, copies: dict, urls: dict, words: int, perms: int) -> None:
    signed = _signed(originals, words, perms)
    for name, values in distinct_similarities(signed, urls).items():
        print(f"distinct, {name} ({len(values):,} passage pairs): {_percentiles(values)}")
    stories = sorted({s for s in map(_story, urls.values()) if s})
    print(f"  stories: {', '.join(f'{s} ({sum(_story(u) == s for u in urls.values())})' for s in stories)}")
    print("  closest pages of different outlets:")
    for value, a, b in closest_pages(signed, urls):
        print(f"    {value:.3f}  {a[:70]}  |  {b[:70]}")
    similar = {level: copy_similarities(signed, _signed(found, words, perms)) for level, found in copies.items()}
    for level, values in similar.items():
        print(f"copies, {level} edits ({len(values):,} passages): min {values.min():.3f}, {_percentiles(values)}")
    print("threshold  " + "  ".join(f"{t:.2f}" for t in THRESHOLDS))
    for level, values in similar.items():
        print(f"{level:>9}  " + "  ".join(f"{np.mean(values >= t):.2f}" for t in THRESHOLDS))


def _percentiles(values: np.ndarray) -> str:
    if not len(values):
        return "none"
    marks = (5, 25, 50, 75, 95, 99, 99.9)
    return ", ".join(f"p{m:g} {np.percentile(values, m):.3f}" for m in marks) + f", max {values.max():.3f}"


def _end_to_end(originals: dict, copies: dict, urls: dict) -> None:
    """copy_groups and article_copies (the constants above) over the benchmark's passages and their reprints."""
    print(f"\ncopy_groups and article_copies over the {len(originals)} pages and their reprints, threshold "
          f"{COPY_THRESHOLD}, share {COPY_SHARE}:")
    for level, reprints in copies.items():
        doc_ids = [key for key in originals for _ in originals[key]] + \
                  [key + "~copy" for key in originals for _ in reprints[key]]
        texts = [c.text for key in originals for c in originals[key]] + \
                [c.text for key in originals for c in reprints[key]]
        groups = copy_groups(signatures(texts), COPY_THRESHOLD)
        pages: dict[int, set[str]] = {}
        for doc, group in zip(doc_ids, groups.tolist(), strict=True):
            pages.setdefault(group, set()).add(doc)
        folded = sum(f"{doc}~copy" in pages[group] for doc, group in zip(doc_ids, groups.tolist(), strict=True)
                     if not doc.endswith("~copy"))
        # the original passages only: the reprints' own copyright line is one text in many of them
        joined = [sorted(d for d in found if not d.endswith("~copy")) for found in pages.values()
                  if sum(not d.endswith("~copy") for d in found) > 1]
        outlets = [pair for pair in joined if len({_host(urls[key]) for key in pair}) > 1]
        named = article_copies(doc_ids, groups, sizes=[len(text) for text in texts])
        both = sum(named.get(key) == [f"{key}~copy"] and named.get(f"{key}~copy") == [key] for key in originals)
        wrong = sum(any(other.removesuffix("~copy") != doc.removesuffix("~copy") for other in found)
                    for doc, found in named.items())
        print(f"  {level:>7} edits: {folded}/{_count(originals)} "
              f"original passages grouped with their reprint ({folded / _count(originals):.3f}); groups joining "
              f"passages of different pages: {len(joined)} (of different outlets: {len(outlets)}); article_copies "
              f"names the reprint both ways for {both}/{len(originals)} pages, another page for {wrong}")


def _count(chunks: dict[str, list[Chunk]]) -> int:
    return sum(map(len, chunks.values()))


def _timings(originals: dict, million: bool) -> None:
    texts = [c.text for found in originals.values() for c in found]
    started = time.perf_counter()
    signatures(texts)
    per_chunk = (time.perf_counter() - started) / len(texts)
    embed = _embed_seconds(texts[:256])
    print(f"\nsignature: {per_chunk * 1e6:.0f} µs per chunk; MiniLM embedding here: {embed * 1e3:.1f} ms per chunk "
          f"({per_chunk / embed:.1%} of it)")
    bands, width = band_layout(COPY_THRESHOLD, COPY_PERMS)
    print(f"grouping, {bands} bands of {width} rows, on synthetic signatures (a fifth of the rows near-copies):")
    for rows in (10_000, 100_000, *((1_000_000,) if million else ())):
        synthetic = _synthetic(rows, COPY_PERMS)
        started = time.perf_counter()
        groups = copy_groups(synthetic, COPY_THRESHOLD)
        seconds = time.perf_counter() - started
        lsh = f"; datasketch MinHashLSH insert + query: {_lsh_seconds(synthetic):.2f} s" if rows <= 100_000 else ""
        print(f"  {rows:>9,} rows: copy_groups {seconds:.2f} s ({copies_in(groups)} rows folded){lsh}")


def copies_in(groups: np.ndarray) -> int:
    return int(np.sum(np.bincount(groups, minlength=len(groups))[groups] >= 2))


def _embed_seconds(texts: list[str]) -> float:
    from rag.models.embedders import get_embedder

    embedder = get_embedder(Settings(embedder="minilm"))
    embedder.embed(texts[:32])  # the first call sets things up
    started = time.perf_counter()
    embedder.embed(texts)
    return (time.perf_counter() - started) / len(texts)


def _synthetic(rows: int, perms: int) -> np.ndarray:
    """Random signatures, a fifth of them copies of an earlier row with a quarter of the values changed."""
    rng = np.random.default_rng(0)
    result = rng.integers(0, 2**32 - 1, size=(rows, perms), dtype=np.uint32)
    copied = rng.choice(np.arange(1, rows), size=rows // 5, replace=False)
    sources = (rng.random(len(copied)) * copied).astype(np.int64)
    changed = rng.random((len(copied), perms)) < 0.25
    result[copied] = np.where(changed, result[copied], result[sources])
    return result


def _lsh_seconds(rows: np.ndarray) -> float:
    from datasketch import LeanMinHash, MinHashLSH

    from rag.indexing.copies import LSH_WEIGHTS, SCHEME, SEED

    started = time.perf_counter()
    lsh = MinHashLSH(threshold=COPY_THRESHOLD, num_perm=rows.shape[1], weights=LSH_WEIGHTS)
    sketches = [LeanMinHash(seed=SEED, hashvalues=row, scheme=SCHEME) for row in rows]
    with lsh.insertion_session() as session:
        for key, sketch in enumerate(sketches):
            session.insert(key, sketch, check_duplication=False)
    for sketch in sketches:
        lsh.query(sketch)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
