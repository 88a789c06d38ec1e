"""Milvus updated in place, measured: what an incremental build costs against rewriting the collection, with
synthetic vectors (no embedder); and Milvus Lite's full-text search (BM25) against bm25s.

`python -m tools.bench_milvus --passages 100000 --add 10` writes a collection of N passages (one per article)
through rag.indexing.stores.write_store as `rag index` does, then an incremental build that adds `--add` articles of
one chunk each and removes as many: write_store in place (new rows inserted, checked) and the clean-up after the
swap (the retired rows deleted by primary key), timed, against writing the same build to a fresh collection.
It also checks the updated store against exact search over the build's vectors, and times a query with and
without the key filter every build's reader carries. `--passages` takes a list (10000,100000) to show how each
part grows with the collection. `--fulltext N` adds Milvus BM25 (a BM25 function on a sparse field, where the
installed Milvus Lite has it) against bm25s (rag.indexing.bm25, the hybrid stage's lexical half) on N passages of three
sentences drawn from the seed article: build time, query p50 and agreement of the top 10 over the question set.
Results go to bench/milvus.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from rag.files import write_text_atomically
from rag.indexing.stores import KEYS_FILE, MilvusStore, drop_stale, milvus_client, write_store
from rag.settings import Settings

DIM = 384
QUERIES = 100
OUT = Path("bench/milvus.json")
SEED = Path("corpus/south-korea-ai-investment.txt")
QUESTIONS = Path("corpus/eval/questions.jsonl")


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


class Folder:
    """An index folder laid out as rag.indexing.build lays it out (builds/<id>/vectors.npy and manifest.json), holding
    synthetic builds."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path, self.settings = path, settings
        (path / "builds").mkdir(parents=True, exist_ok=True)

    def write(self, build_id: str, vectors: np.ndarray, doc_ids: list[str], keys: np.ndarray,
              previous: tuple[Path, dict] | None) -> tuple[tuple[Path, dict], float]:
        """Write a build's vectors file, then its store (timed), then its manifest: ((folder, manifest), s)."""
        build = self.path / "builds" / build_id
        build.mkdir()
        np.save(build / "vectors.npy", vectors, allow_pickle=False)
        mapped = np.load(build / "vectors.npy", mmap_mode="r", allow_pickle=False)
        started = time.perf_counter()
        store = write_store(self.settings, self.path, build, build_id, mapped, doc_ids, keys, previous)
        seconds = time.perf_counter() - started
        next_key = max(int(keys.max()) + 1, previous[1]["next_key"] if previous else 0)
        manifest = {"store": store, "next_key": next_key, "counts": {"chunks": len(keys)}}
        (build / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        return (build, manifest), seconds


def p50_ms(run, queries: np.ndarray | list) -> float:  # noqa: ANN001 - a callable of one query
    run(queries[0])  # warm
    times = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        times.append((time.perf_counter() - started) * 1000)
    return round(median(times), 2)


@contextmanager
def timed_calls(client: Any) -> Iterator[dict[str, float]]:
    """Seconds spent in each of the client's write and lookup calls while the block runs (how the incremental
    write's time splits)."""
    spent: dict[str, float] = {}
    methods = ("load_collection", "delete", "insert", "flush", "query", "list_collections", "get_collection_stats")
    real = {name: getattr(client, name) for name in methods}

    def timing(name: str):  # noqa: ANN202 - a wrapper of the client's method
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return real[name](*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
        return call

    for name in methods:
        setattr(client, name, timing(name))
    try:
        yield spent
    finally:
        for name in methods:
            delattr(client, name)


def in_place(passages: int, add: int, work: Path, index_type: str) -> dict[str, Any]:
    """Full write of `passages` synthetic passages, then an incremental build (+`add`, -`add` articles) in place
    and the same build written to a fresh collection."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = Settings(vector_store="milvus", milvus_uri=str(work / "milvus.db"), index_type=index_type)
    folder = Folder(work / "index", settings)
    vectors = unit_vectors(passages, seed=passages)
    doc_ids = [f"d{i:07}" for i in range(passages)]
    keys = np.arange(passages, dtype=np.int64)
    first, full_s = folder.write("b0-full", vectors, doc_ids, keys, None)

    removed = set(range(0, passages, passages // add)[:add])  # spread over the collection
    kept = np.asarray([i for i in range(passages) if i not in removed])
    vectors_1 = np.concatenate([vectors[kept], unit_vectors(add, seed=passages + 1)])
    doc_ids_1 = [doc_ids[i] for i in kept] + [f"new{j:04}" for j in range(add)]
    keys_1 = np.concatenate([keys[kept], np.arange(passages, passages + add, dtype=np.int64)])
    client = milvus_client(str(work / "milvus.db"))
    with timed_calls(client) as calls:
        second, write_s = folder.write("b1-incremental", vectors_1, doc_ids_1, keys_1, first)
        started = time.perf_counter()
        drop_stale(settings, folder.path, "b1-incremental")  # after the swap: the retired rows deleted
        delete_s = time.perf_counter() - started
    started = time.perf_counter()
    store = MilvusStore(second[1]["store"], second[0])
    open_s = time.perf_counter() - started

    name = second[1]["store"]["collection"]
    held = client.query(name, filter="key >= 0", output_fields=["count(*)"])[0]["count(*)"]
    gone = client.query(name, ids=sorted(int(keys[i]) for i in removed), output_fields=["key"])
    queries = unit_vectors(QUERIES, seed=7)
    exact = np.argsort(-(queries @ vectors_1.T), axis=1)[:, :10]
    agree = np.mean([[i for i, _ in store.search(q, 10)] == list(row) for q, row in zip(queries, exact, strict=True)])
    filtered_ms = p50_ms(lambda q: store.search(q, 10), queries)
    raw_ms = p50_ms(lambda q: client.search(name, data=[q.tolist()], limit=10, output_fields=["key"],
                                            search_params={"metric_type": "IP", "params": {"ef": 512}}), queries)

    _, rewrite_s = folder.write("b1-rewrite", vectors_1, doc_ids_1, keys_1, None)
    client.drop_collection(json.loads((folder.path / "builds" / "b1-rewrite" / "manifest.json").read_text())
                           ["store"]["collection"])
    result = {
        "passages": passages, "added": add, "removed": add, "index_type": second[1]["store"]["index_type"],
        "full_write_s": round(full_s, 2),
        "incremental_write_s": round(write_s, 3), "delete_after_swap_s": round(delete_s, 3),
        "incremental_total_s": round(write_s + delete_s, 3),
        "rewrite_same_build_s": round(rewrite_s, 2),
        "speedup": round(rewrite_s / (write_s + delete_s), 1),
        "rows_written": second[1]["store"]["written"], "rows_retired": second[1]["store"]["retired"],
        "rows_held_after": int(held), "removed_rows_left": len(gone),
        "incremental_calls_s": {k: round(v, 3) for k, v in calls.items()},
        "reader_open_s": round(open_s, 3), "top10_equal_to_exact": float(agree),
        "query_p50_ms_with_key_filter": filtered_ms, "query_p50_ms_without_filter": raw_ms,
        "keys_file_bytes": (second[0] / KEYS_FILE).stat().st_size,
    }
    return result


# ---------------------------------------------------------------- full-text search: Milvus BM25 against bm25s


def three_sentence_passages(n: int, article: Path) -> list[tuple[str, str]]:
    """(title, text) passages of three of the article's sentences each, drawn reproducibly (as
    tools.bench_scale.synthetic_corpus draws its articles)."""
    from rag.text import split_sentences

    sentences = split_sentences(article.read_text(encoding="utf-8"))
    rng = random.Random(n)
    return [(f"Report {i}", " ".join(rng.sample(sentences, 3))) for i in range(n)]


def milvus_has_fulltext(client: Any, name: str) -> str:
    """"" when this Milvus accepts a BM25 function on a sparse field, else why not."""
    try:
        _fulltext_collection(client, name)
    except Exception as exc:  # noqa: BLE001 - pymilvus raises its own; the message is the answer
        return str(exc)[:300]
    client.drop_collection(name)
    return ""


def _fulltext_collection(client: Any, name: str) -> None:
    from bm25s.stopwords import STOPWORDS_EN
    from pymilvus import DataType, Function, FunctionType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=8192, enable_analyzer=True,
                     analyzer_params={"tokenizer": "standard",
                                      "filter": ["lowercase", {"type": "stop", "stop_words": sorted(STOPWORDS_EN)}]})
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                 output_field_names=["sparse"]))
    index = client.prepare_index_params()
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                    params={"bm25_k1": 1.5, "bm25_b": 0.75})  # bm25s's defaults
    client.create_collection(name, schema=schema, index_params=index)


def fulltext(passages: int, work: Path) -> dict[str, Any]:
    import bm25s
    from bm25s.stopwords import STOPWORDS_EN

    from rag.indexing.bm25 import BM25Stage, write_bm25
    from rag.text import lexical_tokens

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    client = milvus_client(str(work / "fulltext.db"))
    unsupported = milvus_has_fulltext(client, "probe")
    if unsupported:
        return {"passages": passages, "supported": False, "why": unsupported}
    texts = three_sentence_passages(passages, SEED)
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]

    started = time.perf_counter()
    write_bm25(iter(texts), work)
    bm25s_build_s = time.perf_counter() - started
    stage = BM25Stage.load(work, passages)
    model = bm25s.BM25.load(str(work / "bm25"), mmap=True, load_corpus=False)  # for every passage's score

    name = "fulltext"
    started = time.perf_counter()
    _fulltext_collection(client, name)
    for start in range(0, passages, 2000):
        client.insert(name, [{"key": i, "text": f"{title} {text}"}
                             for i, (title, text) in enumerate(texts[start:start + 2000], start)])
    client.flush(name)
    milvus_build_s = time.perf_counter() - started
    client.load_collection(name)

    def milvus_top(question: str) -> list[int]:
        hits = client.search(name, data=[question], anns_field="sparse", limit=10, output_fields=["key"],
                             search_params={"metric_type": "BM25"})
        return [int(hit["key"]) for hit in hits[0]]

    overlap, top1, within, best, tied = [], [], [], [], []
    stop = frozenset(STOPWORDS_EN)
    for question in questions:
        ours, theirs = [i for i, _ in stage.search(question, 10)], milvus_top(question)
        if not ours:
            continue
        overlap.append(len(set(ours) & set(theirs)) / len(ours))
        top1.append(bool(theirs) and ours[0] == theirs[0])
        tokens = [t for t in lexical_tokens(question) if t not in stop and t in model.vocab_dict]
        scores = model.get_scores(tokens)
        tenth = np.sort(scores)[-len(ours)]  # bm25s's 10th best score: ties around it are equally good answers
        within.append(np.mean([scores[i] >= tenth - 1e-4 for i in theirs]) if theirs else 0.0)
        best.append(bool(theirs) and scores[theirs[0]] >= scores.max() - 1e-4)
        tied.append(int(np.sum(scores >= scores.max() - 1e-4)))
    return {
        "passages": passages, "supported": True, "questions": len(overlap),
        "bm25s_build_s": round(bm25s_build_s, 1), "milvus_build_s": round(milvus_build_s, 1),
        "bm25s_query_p50_ms": p50_ms(lambda q: stage.search(q, 10), questions),
        "milvus_query_p50_ms": p50_ms(milvus_top, questions),
        "top10_overlap": round(float(np.mean(overlap)), 3), "top1_same": round(float(np.mean(top1)), 3),
        "milvus_top10_in_bm25s_top10_scores": round(float(np.mean(within)), 3),
        "milvus_top1_at_bm25s_best_score": round(float(np.mean(best)), 3),
        "passages_tied_at_bm25s_best_median": int(median(tied)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", default="100000", help="collection sizes, comma-separated")
    parser.add_argument("--add", type=int, default=10, help="articles added and removed by the incremental build")
    parser.add_argument("--index-type", default="auto", choices=("auto", "flat", "hnsw"))
    parser.add_argument("--fulltext", type=int, default=0, help="passages for Milvus BM25 vs bm25s (0: skip)")
    parser.add_argument("--work", type=Path, default=Path("bench/.milvus-work"), help="Milvus Lite files")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                               "in_place": []}
    for n in [int(s) for s in args.passages.split(",") if s]:
        row = in_place(n, args.add, args.work / f"n{n}", args.index_type)
        print(json.dumps(row))
        results["in_place"].append(row)
    if args.fulltext:
        results["fulltext"] = fulltext(args.fulltext, args.work / "fulltext")
        print(json.dumps(results["fulltext"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out, json.dumps(results, indent=1) + "\n")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
