"""How vector search and BM25 scale to a million passages: build time, memory, query latency and recall, measured.

`python -m tools.bench_scale [--sizes 10000,100000,1000000] [--like vectors.npy]` writes bench/scale.json and
docs/scale.png. Vectors are unit vectors of the embedder's dimension (384), seeded: by default uniformly random,
the hardest case for approximate search (every point is nearly as far as every other); with `--like`, drawn with
the mean and covariance of real embeddings (docs/scaling.md uses the RGB passages embedded by minilm). Queries come
from the same distribution, and recall@10 is measured against exact search (FAISS IndexFlatIP) on the same
corpus. BM25 (bm25s, the hybrid stage's lexical half) runs
on passages of three sentences drawn at random from the seed article. Memory is the growth of the process's
resident set while the index is built and held, per passage. Each approximate index is swept over its search
setting; docs/scaling.md reports the cheapest setting that reaches recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from rag.files import write_text_atomically

DIM = 384
QUERIES = 200
K = 10
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 100
HNSW_EF_SEARCH = (16, 32, 64, 128, 256, 512)
IVF_NPROBE = (1, 4, 16, 64, 256)
OUT = Path("bench/scale.json")
SEED = Path("corpus/south-korea-ai-investment.txt")
CHART = Path("docs/scale.png")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def vectors_like(n: int, seed: int, like: np.ndarray) -> np.ndarray:
    """Unit vectors drawn from a Gaussian with the mean and covariance of real embeddings `like`: the spread of
    real text over its directions (a few carry most of the variance), which approximate search depends on."""
    mean = like.mean(axis=0)
    _, spread, directions = np.linalg.svd(like - mean, full_matrices=False)
    spread = (spread / np.sqrt(len(like))).astype(np.float32)
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, like.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), len(spread)), dtype=np.float32) * spread
        vectors[start:start + len(block)] = mean + block @ directions.astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def spread_summary(like: np.ndarray) -> dict[str, float]:
    """How unevenly real embeddings spread over their directions: principal components holding 50/90% of the
    variance, and the participation ratio (an effective number of dimensions)."""
    variance = np.linalg.svd(like - like.mean(axis=0), compute_uv=False) ** 2
    share = np.cumsum(variance) / variance.sum()
    return {"vectors": len(like), "components_for_50%": int(np.searchsorted(share, 0.5)) + 1,
            "components_for_90%": int(np.searchsorted(share, 0.9)) + 1,
            "participation_ratio": round(float(variance.sum() ** 2 / (variance ** 2).sum()), 1)}


# `rag index` in a new process that reports its own peak RSS (ru_maxrss of RUSAGE_SELF) on its last line
INDEX_AND_REPORT_RSS = ("import resource, sys; from rag.cli import main; code = main(['index'] + sys.argv[1:]); "
                        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def synthetic_corpus(folder: Path, documents: int, article: Path) -> None:
    """`documents` articles of three of the article's sentences each (about one chunk each), drawn reproducibly."""
    from rag.text import split_sentences

    sentences = split_sentences(article.read_text(encoding="utf-8"))
    rng = random.Random(documents)
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(documents):
        (folder / f"d{n:06}.txt").write_text(f"Report {n}\n" + " ".join(rng.sample(sentences, 3)) + "\n",
                                             encoding="utf-8")


def index_memory(documents: int, article: Path, embedder: str, extra: list[str] | None = None) -> dict[str, Any]:
    """Peak RSS of `rag index` in a new process over `documents` synthetic articles, without generator states,
    with its chunks/s and the build's size on disk."""
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        synthetic_corpus(corpus, documents, article)
        env = {**os.environ, "RAG_INDEX_DIR": str(index), "RAG_CORPUS_DIR": str(corpus),
               "RAG_INDEX_STATES": "false", "RAG_EMBEDDER": embedder}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", INDEX_AND_REPORT_RSS, *(extra or [])], env=env,
                              capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        lines = done.stdout.strip().splitlines()
        disk = sum(p.stat().st_size for p in (index / "builds").rglob("*") if p.is_file())
    return {"documents": documents, "embedder": embedder, "peak_rss_mb": round(int(lines[-1]) / 1024),
            "seconds": round(seconds, 1), "disk_mb": round(disk / 2**20, 1), "summary": lines[-2]}


def timed_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    found, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(search(query.reshape(1, -1)))
        seconds.append(time.perf_counter() - started)
    return np.vstack(found), seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def row(kind: str, n: int, build_s: float, memory_mb: float, seconds: list[float], found: np.ndarray,
        truth: np.ndarray, setting: str) -> dict[str, Any]:
    return {"index": kind, "passages": n, "setting": setting, "build_s": round(build_s, 2),
            "bytes_per_passage": round(memory_mb * 2**20 / n, 1),
            "query_p50_ms": round(median(seconds) * 1000, 3),
            "query_p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 3),
            "recall_at_10": round(recall(found, truth), 4)}


def faiss_rows(vectors: np.ndarray, queries: np.ndarray) -> tuple[list[dict], np.ndarray]:
    import faiss

    n, rows = len(vectors), []
    before = rss_mb()
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    build_s, memory = time.perf_counter() - started, rss_mb() - before
    truth, seconds = timed_queries(lambda q: flat.search(q, K)[1][0], queries)
    rows.append(row("faiss IndexFlatIP (exact)", n, build_s, memory, seconds, truth, truth, ""))
    flat.reset()  # frees its vectors before the next index is measured

    before = rss_mb()
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.add(vectors)
    build_s, memory = time.perf_counter() - started, rss_mb() - before
    for ef in HNSW_EF_SEARCH:
        hnsw.hnsw.efSearch = ef
        found, seconds = timed_queries(lambda q: hnsw.search(q, K)[1][0], queries)
        rows.append(row(f"faiss HNSW (M={HNSW_M}, efConstruction={HNSW_EF_CONSTRUCTION})", n, build_s, memory,
                        seconds, found, truth, f"efSearch={ef}"))
    hnsw.reset()

    nlist = max(16, int(4 * np.sqrt(n)))
    before = rss_mb()
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIM)
    ivf = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors[np.random.default_rng(1).choice(n, min(n, 64 * nlist), replace=False)])
    ivf.add(vectors)
    build_s, memory = time.perf_counter() - started, rss_mb() - before
    for nprobe in IVF_NPROBE:
        if nprobe > nlist:
            continue
        ivf.nprobe = nprobe
        found, seconds = timed_queries(lambda q: ivf.search(q, K)[1][0], queries)
        rows.append(row("faiss IVFFlat (nlist=4√n)", n, build_s, memory, seconds, found, truth,
                        f"nlist={nlist}, nprobe={nprobe}"))
    return rows, truth


def milvus_rows(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, folder: Path) -> list[dict]:
    from pymilvus import DataType, MilvusClient

    n = len(vectors)
    client = MilvusClient(uri=str(folder / f"scale-{n}.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="IP",
                    params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
    started = time.perf_counter()
    client.create_collection("scale", schema=schema, index_params=index)
    for start in range(0, n, 5000):
        block = vectors[start:start + 5000]
        client.insert("scale", [{"id": start + i, "vector": v} for i, v in enumerate(block.tolist())])
    client.flush("scale")
    while client.describe_index("scale", "vector").get("pending_index_rows", 0):
        time.sleep(0.5)
    client.release_collection("scale")
    client.load_collection("scale")  # with the finished index: searches before it are brute force
    build_s = time.perf_counter() - started
    rows = []
    client.search("scale", data=queries[:20].tolist(), limit=K)  # warm-up, not timed
    for ef in HNSW_EF_SEARCH:
        def search(q: np.ndarray, ef: int = ef) -> np.ndarray:
            hits = client.search("scale", data=q.tolist(), limit=K,
                                 search_params={"metric_type": "IP", "params": {"ef": max(ef, K)}})
            return np.array([hit["id"] for hit in hits[0]])
        found, seconds = timed_queries(search, queries)
        # Milvus Lite keeps its data in a server process of its own: its memory is not this process's
        rows.append(row(f"Milvus Lite HNSW (M={HNSW_M}, efConstruction={HNSW_EF_CONSTRUCTION})", n, build_s, 0.0,
                        seconds, found, truth, f"ef={ef}") | {"bytes_per_passage": None})
    client.drop_collection("scale")
    client.close()
    return rows


def bm25_rows(n: int, article: Path) -> list[dict]:
    import bm25s

    from rag.text import lexical_tokens, split_sentences

    sentences = split_sentences(article.read_text(encoding="utf-8"))
    rng = random.Random(0)
    before = rss_mb()
    started = time.perf_counter()
    corpus = [lexical_tokens(" ".join(rng.sample(sentences, 3))) for _ in range(n)]
    model = bm25s.BM25()
    model.index(corpus, show_progress=False)
    build_s, memory = time.perf_counter() - started, rss_mb() - before
    questions = [lexical_tokens(s)[:8] for s in rng.sample(sentences, min(50, len(sentences)))]
    seconds = []
    for query in questions:
        query = [t for t in query if t in model.vocab_dict]
        started = time.perf_counter()
        model.retrieve([query], k=20, show_progress=False)
        seconds.append(time.perf_counter() - started)
    return [{"index": "bm25s (article sentences recombined)", "passages": n, "setting": "k=20",
             "build_s": round(build_s, 2), "bytes_per_passage": round(memory * 2**20 / n, 1),
             "query_p50_ms": round(median(seconds) * 1000, 3),
             "query_p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 3), "recall_at_10": None}]


# One BM25 measurement in a new process, so its start-up and resident memory are its own: argv is the mode
# ("build", "mmap" or "memory"), the folder, the passage count; prints one JSON line.
BM25_CHILD = "from tools.bench_scale import bm25_child; import sys; bm25_child(*sys.argv[1:])"
BM25_QUERIES = 200


def bm25_passages(n: int) -> Iterator[tuple[str, str]]:
    """(title, text) of `n` passages of three sentences of the seed article, drawn reproducibly."""
    from rag.text import split_sentences

    sentences = split_sentences(SEED.read_text(encoding="utf-8"))
    rng = random.Random(0)
    for number in range(n):
        yield f"Report {number}", " ".join(rng.sample(sentences, 3))


def bm25_questions() -> list[str]:
    """The project's questions (answerable or not): real wording, as retrieval sees it."""
    lines = (Path("corpus") / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()][:BM25_QUERIES]


def bm25_child(mode: str, folder: str, n: str) -> None:
    from rag.indexing.bm25 import BM25Stage, write_bm25

    before = rss_mb()
    started = time.perf_counter()
    if mode == "build":
        write_bm25(bm25_passages(int(n)), Path(folder))
        print(json.dumps({"build_s": round(time.perf_counter() - started, 2),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
        return
    stage = (BM25Stage.load(Path(folder), int(n)) if mode == "mmap"
             else BM25Stage.in_memory(list(bm25_passages(int(n)))))
    load_s = time.perf_counter() - started
    seconds, found = [], []
    for question in bm25_questions():
        started = time.perf_counter()
        found.append([i for i, _ in stage.search(question, 10)])
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"load_s": round(load_s, 2), "query_p50_ms": round(median(seconds) * 1000, 2),
                      "query_p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 2),
                      "rss_before_mb": round(before), "rss_after_queries_mb": round(rss_mb()), "top10": found}))


def bm25_saved_rows(n: int, work: Path) -> list[dict]:
    """BM25 at `n` passages: built and saved as `rag index` does, then memory-mapped, against built in memory;
    each in a new process."""
    import subprocess
    import sys

    def child(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", BM25_CHILD, mode, str(work), str(n)], capture_output=True,
                              text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    built = child("build")
    disk = sum(p.stat().st_size for p in (work / "bm25").rglob("*") if p.is_file())
    mapped, memory = child("mmap"), child("memory")
    shutil.rmtree(work, ignore_errors=True)
    same = sum(a == b for a, b in zip(mapped.pop("top10"), memory.pop("top10"), strict=True))
    return [{"passages": n, "saved": {**built, "disk_mb": round(disk / 2**20, 1), **mapped},
             "in_memory": memory, "same_top10": f"{same}/{len(bm25_questions())}",
             "p50_ratio_mmap_to_memory": round(mapped["query_p50_ms"] / memory["query_p50_ms"], 2)}]


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in dict.fromkeys(r["index"] for r in rows):
        mine = [r for r in rows if r["index"] == kind]
        if mine[0]["recall_at_10"] is None:
            continue
        best = {}  # per size: the cheapest setting reaching recall@10 0.95 (none: no point)
        for r in sorted(mine, key=lambda r: -r["query_p50_ms"]):
            if r["recall_at_10"] >= 0.95:
                best[r["passages"]] = r
        sizes = sorted(best)
        left.plot(sizes, [best[s]["query_p50_ms"] for s in sizes], marker="o", label=kind)
        n_max = max(r["passages"] for r in mine)
        at_max = sorted((r for r in mine if r["passages"] == n_max), key=lambda r: r["query_p50_ms"])
        right.plot([r["query_p50_ms"] for r in at_max], [r["recall_at_10"] for r in at_max], marker="o",
                   label=f"{kind}, {n_max:,}")
    left.set(xscale="log", yscale="log", xlabel="passages", ylabel="query p50 (ms)",
             title="query latency (cheapest setting with recall@10 ≥ 0.95)")
    right.set(xscale="log", xlabel="query p50 (ms)", ylabel="recall@10", title="recall against latency, largest size")
    right.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes, comma-separated")
    parser.add_argument("--milvus-max", type=int, default=100000, help="largest size Milvus Lite is measured at")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--work", type=Path, default=Path("bench/.scale-work"), help="Milvus Lite files")
    parser.add_argument("--like", type=Path, help="a vectors.npy of real embeddings: draw vectors (and queries) "
                        "with their mean and covariance instead of uniformly at random")
    parser.add_argument("--bm25", action=argparse.BooleanOptionalAction, default=True, help="measure BM25 too")
    parser.add_argument("--chart-from", type=Path, help="only redraw the chart from a results file")
    parser.add_argument("--index-memory", metavar="N,N,...", help="only the peak RSS of `rag index` over N "
                        "synthetic articles, each size in a new process, smallest first")
    parser.add_argument("--bm25-saved", metavar="N,N,...", help="only BM25 saved and memory-mapped as `rag index` "
                        "writes it, against built in memory, at N passages")
    parser.add_argument("--bm25-out", type=Path, default=Path("bench/bm25.json"))
    parser.add_argument("--embedder", default="minilm", help="the embedder --index-memory indexes with (minilm: "
                        "the default embeddinggemma takes hours over 100,000 articles on 2 cores)")
    args = parser.parse_args(argv)
    if args.index_memory:
        for documents in sorted(int(n) for n in args.index_memory.split(",")):
            print(json.dumps(index_memory(documents, SEED, args.embedder)), flush=True)
        return 0
    if args.bm25_saved:
        found = [row for n in args.bm25_saved.split(",") for row in bm25_saved_rows(int(n), args.work / "bm25")]
        for row in found:
            print(json.dumps(row), flush=True)
        args.bm25_out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(args.bm25_out, json.dumps(found, indent=1) + "\n")
        return 0
    if args.like:
        print(json.dumps(spread_summary(np.load(args.like, allow_pickle=False))), flush=True)
    if args.chart_from:
        chart(json.loads(args.chart_from.read_text())["rows"], args.chart)
        return 0
    like = np.load(args.like, allow_pickle=False) if args.like else None

    def draw(n: int, seed: int) -> np.ndarray:
        return unit_vectors(n, seed) if like is None else vectors_like(n, seed, like)
    rows: list[dict] = []
    queries = draw(QUERIES, seed=2)
    for n in [int(s) for s in args.sizes.split(",")]:
        vectors = draw(n, seed=1)
        found, truth = faiss_rows(vectors, queries)
        rows += found
        if n <= args.milvus_max:
            args.work.mkdir(parents=True, exist_ok=True)
            rows += milvus_rows(vectors, queries, truth, args.work)
            shutil.rmtree(args.work, ignore_errors=True)
        del vectors
        gc.collect()
        if args.bm25:
            rows += bm25_rows(n, SEED)
        for r in rows:
            if r["passages"] == n:
                print(json.dumps(r), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = f"like {args.like}" if like is not None else "uniform on the unit sphere"
        summary = {"rows": rows, "dim": DIM, "queries": QUERIES, "vectors": data}
        write_text_atomically(args.out, json.dumps(summary, indent=1))
    chart(rows, args.chart)
    print(f"wrote {args.out} and {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
