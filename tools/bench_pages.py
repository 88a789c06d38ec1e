"""The 181-page scenario (issue 42): the article-extraction benchmark's real news pages indexed end to end, then
asked about, measured side by side in one run. Nothing else may run a model meanwhile.

    python -m tools.bench_pages                     # index (timed, rebuilt), then answer; rows to bench/results.json
    python -m tools.bench_pages --no-index          # answer over the index an earlier run left
    python -m tools.bench_pages --windows 0,64,96   # the reading windows to compare (0: whole passages)

The pages are decompressed into a cache folder (a working copy of the evaluation data, outside the repository).
The questions are made from the indexed pages' own titles ("What do the articles say about <title>?"), every
k-th page, so that each has an article to answer from; they measure time, not accuracy (accuracy is measured on
RGB and the project's question set with `rag eval`). Each question is answered once per reading window, the
order rotating, after the seed article's questions answered the default way for the ratio's baseline.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

from rag.answering.flow import answer
from rag.evaluation.questions import DEFAULT_QUESTIONS, load_questions
from rag.indexing.build import build_index, index_folder, load_index
from rag.models.embedders import bound_index_memory, embedder_precision, get_embedder
from rag.settings import Settings, load_settings
from tools.results import RESULTS, Row, median, print_table, replace_rows

PAGES = Path("..") / "shared" / "benchmarks" / "article-extraction" / "html"


def pages_corpus(settings: Settings, pages: int) -> Path:
    """The first `pages` pages, decompressed into the cache (written once; the benchmark's files stay as they are)."""
    corpus = settings.cache_dir / "benchmarks" / f"pages-{pages}" / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for page in sorted(PAGES.glob("*.html.gz"))[:pages]:
        target = corpus / page.name.removesuffix(".gz")
        if not target.exists():
            target.write_bytes(gzip.decompress(page.read_bytes()))
    return corpus


def _label(corpus: Path, settings: Settings | None = None) -> str:
    pages = f"{sum(1 for _ in corpus.glob('*.html'))}-page"
    if settings is None or settings.embedder_backend == "torch":
        return pages
    return f"{pages} ({settings.embedder_backend} {embedder_precision(settings)})"


# The exported runtime timed beside torch: OpenVINO with int8 weights, the fastest that keeps torch's vectors
# (docs/models.md, "The embedder's runtime").
EXPORTED = {"embedder_backend": "openvino", "embedder_precision": "int8"}


def pages_index_rows(settings: Settings, corpus: Path, exported: bool = True) -> list[Row]:
    """The whole `rag index` run over the pages (rebuilt), against encoding the same chunk texts alone; with
    `exported`, the same with the exported runtime first (the index left is the settings' own), and its index
    time against torch's."""
    if not exported or settings.embedder_backend != "torch":
        return _index_rows(settings, corpus)[0]
    exported_rows, exported_s = _index_rows(settings.replace(**EXPORTED), corpus)
    rows, seconds = _index_rows(settings, corpus)
    return rows + exported_rows + [Row(
        f"{_label(corpus)} index time: {EXPORTED['embedder_backend']} {EXPORTED['embedder_precision']} ÷ "
        f"torch {embedder_precision(settings)}", round(exported_s, 1), round(seconds, 1), "<= 0.25", "s",
        "the goal is 4x faster; both rebuilt in this run")]


def _index_rows(settings: Settings, corpus: Path) -> tuple[list[Row], float]:
    bound_index_memory()
    folder = index_folder(settings, corpus)
    report = build_index([corpus], folder, settings, rebuild=True, progress=False)
    texts = [chunk.text for chunk in load_index(folder).chunks]
    embedder = get_embedder(settings)
    started = time.perf_counter()
    embedder.embed(texts)
    encode_s = time.perf_counter() - started
    label = _label(corpus, settings)
    note = (f"{report.documents} pages, {report.chunks} chunks; embedder {settings.embedder} "
            f"({settings.embedder_backend} {embedder_precision(settings)}); encode alone {encode_s:.1f} s")
    return [
        Row(f"{label} index: rag index end to end (absolute, machine-dependent)",
            round(report.seconds, 1), None, "<= 120", "s", note),
        Row(f"{label} index chunks/s: rag index ÷ encoding the same chunks alone",
            round(report.chunks / report.seconds, 2), round(len(texts) / encode_s, 2), ">= 0.9", "chunks/s", note),
    ], report.seconds


def page_questions(corpus: Path, settings: Settings, count: int) -> list[str]:
    """A question per k-th indexed page, made from its title (titles of fewer than four words are left out)."""
    titles = list(dict.fromkeys(c.title for c in load_index(index_folder(settings, corpus)).chunks))
    titles = [t for t in titles if len(t.split()) >= 4]
    step = max(1, len(titles) // count)
    return [f"What do the articles say about {t.rstrip('.?!')}?" for t in titles[::step][:count]]


def answer_rows(settings: Settings, corpus: Path, questions: list[str], windows: list[int]) -> list[Row]:
    """Each question answered once per reading window (the order rotating), and the seed article's questions the
    default way, in one run: the median answer time and first token per window, and its ratio to the seed's."""
    seed = [q.question for q in load_questions(settings.corpus_dir / DEFAULT_QUESTIONS) if not q.unanswerable][::8]
    seed = seed[:max(2, len(questions))]  # no more of the baseline than of the pages' questions
    answer(seed[0], settings=settings)  # warm-up: the models and the seed article's state
    answer(questions[0], settings=settings, corpus=corpus)  # and the pages' index
    seed_replies = [answer(q, settings=settings) for q in seed]
    seed_s = [reply.timings["total_s"] for reply in seed_replies]
    seed_first = [reply.timings.get("ttft_s") or 0.0 for reply in seed_replies]
    total: dict[int, list[float]] = {w: [] for w in windows}
    first: dict[int, list[float]] = {w: [] for w in windows}
    for n, question in enumerate(questions):
        for window in windows[n % len(windows):] + windows[:n % len(windows)]:
            reply = answer(question, settings=settings.replace(read_window_tokens=window), corpus=corpus)
            total[window].append(reply.timings["total_s"])
            first[window].append(reply.timings.get("ttft_s") or 0.0)
    rows = []
    for window in windows:
        reading = f"passages cut to {window}-token windows" if window else "whole passages"
        note = f"{len(questions)} questions from the pages' titles; seed: {len(seed)} questions"
        rows += [
            Row(f"{_label(corpus)} answer time p50 ({reading}) ÷ seed-article answer p50", median(total[window]),
                median(seed_s), "", "s", note),
            Row(f"{_label(corpus)} answer time p50 ({reading}; absolute, machine-dependent)",
                median(total[window]), None, "<= 3", "s", note),
            Row(f"{_label(corpus)} time to first token p50 ({reading}; absolute, machine-dependent)",
                median(first[window]), None, "<= 2", "s", note),
            Row(f"{_label(corpus)} time to first token p50 ({reading}) ÷ seed-article first token p50",
                median(first[window]), median(seed_first), "", "s", note),
        ]
    return rows


def pages_rows(settings: Settings, pages: int = 181, questions: int = 20, windows: tuple[int, ...] = (0, 96),
               index: bool = True, exported: bool = True) -> list[Row]:
    """The scenario's rows: the index end to end (unless `index` is False; with the exported runtime too unless
    `exported` is False) and the answers per reading window."""
    corpus = pages_corpus(settings, pages)
    rows = pages_index_rows(settings, corpus, exported) if index else []
    if questions <= 0:
        return rows
    return rows + answer_rows(settings, corpus, page_questions(corpus, settings, questions), list(windows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_pages", description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=181, help="how many pages (default: all 181)")
    parser.add_argument("--questions", type=int, default=20, help="questions asked (default 20; 0: index only)")
    parser.add_argument("--windows", default="0,96", help="reading windows in tokens, 0 = whole passages")
    parser.add_argument("--no-index", action="store_true", help="keep the index an earlier run built")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS})")
    args = parser.parse_args(argv)
    windows = tuple(int(w) for w in args.windows.split(","))
    rows = pages_rows(load_settings(), args.pages, args.questions, windows, index=not args.no_index)
    print_table(rows)
    replace_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
