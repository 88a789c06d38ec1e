"""The embedder backends side by side in one process: chunks/s over real news chunks, query encoding time, and
each backend's vectors against torch float32's on fixed texts (`python -m tools.probe_backends`); with `--rss`, each
backend's peak memory in a process of its own."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

from rag.ingest.chunking import chunk_document, chunking
from rag.ingest.reading import IngestError, read_document
from rag.models.embedders import get_embedder
from rag.settings import Settings
from tools.bench_pages import pages_corpus

# (backend, precision): torch bfloat16 is today's default; the others are the exported runtimes.
VARIANTS = (("torch", "bfloat16"), ("onnx", "float32"), ("openvino", "float32"), ("openvino", "bfloat16"),
            ("openvino", "int8"))
CHECK_TEXTS = ("South Korea will invest 1.02 trillion won in AI semiconductors by 2027.",
               "Mark Zuckerberg met the president of South Korea in Seoul.",
               "The recipe needs two eggs and a cup of flour.")
QUESTIONS = ("How much will South Korea invest in AI chips by 2027?", "Who won the election in Taiwan?",
             "What did the central bank decide in March?")
BUSY = "rag eval|tools.bench|pytest"  # another measurement on this machine makes the timings provisional


def page_chunks(settings: Settings, count: int) -> list[str]:
    """The chunks `rag index` would embed from every sixth saved page of the article-extraction benchmark, until
    `count` are found."""
    counter = get_embedder(settings.replace(embedder_backend="torch", embedder_precision="float32")).count_tokens
    texts: list[str] = []
    for path in sorted(pages_corpus(settings, 181).glob("*.html"))[::6]:  # the 181-page scenario's decompressed copy
        try:
            document = read_document(path, path.name, settings.max_file_mb)
        except IngestError:
            continue
        texts += [chunk.text for chunk in chunk_document(document, counter, *chunking(settings))]
        if len(texts) >= count:
            break
    return texts[:count]


def busy() -> list[str]:
    """Other measuring processes running now (their command lines)."""
    found = subprocess.run(["pgrep", "-fa", BUSY], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if int(line.split()[0]) != os.getpid()]


def probe(settings: Settings, chunks: list[str], rounds: int) -> list[dict]:
    """Each variant's median chunks/s and query ms over `rounds` interleaved rounds (the order rotated each round),
    and the lowest cosine of its vectors against torch float32's on the check texts and questions."""
    reference = get_embedder(settings.replace(embedder_backend="torch", embedder_precision="float32"))
    wanted = np.concatenate([reference.embed(list(CHECK_TEXTS)), reference.embed_queries(list(QUESTIONS))])
    embedders = {}
    for backend, precision in VARIANTS:
        embedder = get_embedder(settings.replace(embedder_backend=backend, embedder_precision=precision))
        embedder.warm_up()
        embedder.embed(chunks[:4])  # first-call setup is not speed
        embedders[f"{backend} {precision}"] = embedder
    rates: dict[str, list[float]] = {name: [] for name in embedders}
    query_ms: dict[str, list[float]] = {name: [] for name in embedders}
    names = list(embedders)
    for number in range(rounds):
        for name in names[number % len(names):] + names[:number % len(names)]:
            started = time.perf_counter()
            embedders[name].embed(chunks)
            rates[name].append(len(chunks) / (time.perf_counter() - started))
            for question in QUESTIONS:
                started = time.perf_counter()
                embedders[name].embed_query(question)
                query_ms[name].append(1000 * (time.perf_counter() - started))
            print(f"round {number + 1}: {name}: {rates[name][-1]:.2f} chunks/s", file=sys.stderr, flush=True)
    rows = []
    for name, embedder in embedders.items():
        found = np.concatenate([embedder.embed(list(CHECK_TEXTS)), embedder.embed_queries(list(QUESTIONS))])
        rows.append({"variant": name, "chunks_per_s": round(median(rates[name]), 2),
                     "rounds": [round(r, 2) for r in rates[name]], "query_ms_p50": round(median(query_ms[name]), 1),
                     "min_cosine_vs_torch_float32": round(float(np.sum(found * wanted, axis=1).min()), 5)})
    return rows


def peak_rss_mb(embedder: str, backend: str, precision: str, chunks: list[str]) -> int:
    """The peak resident memory of a fresh process that loads the embedder with one backend and embeds `chunks`."""
    script = ("import json, resource, sys\n"
              "from rag.models.embedders import get_embedder\n"
              "from rag.settings import Settings\n"
              "embedder, backend, precision = sys.argv[1:4]\n"
              "get_embedder(Settings(embedder=embedder, embedder_backend=backend, embedder_precision=precision)).embed("
              "json.load(sys.stdin))\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, embedder, backend, precision], input=json.dumps(chunks),
                          capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rss", action="store_true",
                        help="instead: each variant's peak RSS in its own process, embedding 64 of the chunks")
    parser.add_argument("--chunks", type=int, default=200, help="real news chunks embedded per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--embedder", default="embeddinggemma")
    parser.add_argument("--force", action="store_true", help="time even while another measurement runs")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args(argv)
    others = busy()
    if others and not args.force:
        print("another measurement runs (timings would be provisional; --force times anyway):\n  "
              + "\n  ".join(others), file=sys.stderr)
        return 2
    settings = Settings(embedder=args.embedder)
    chunks = page_chunks(settings, args.chunks)
    if args.rss:
        for backend, precision in VARIANTS:
            rss = peak_rss_mb(args.embedder, backend, precision, chunks[:64])
            print(f"{backend:8s} {precision:8s} peak RSS {rss} MB")
        return 0
    rows = probe(settings, chunks, args.rounds)
    conditions = {"chunks": len(chunks), "rounds": args.rounds, "threads": settings.n_threads,
                  "batch": settings.embed_batch_size, "others_at_start": others, "others_at_end": busy(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    base = next(row["chunks_per_s"] for row in rows if row["variant"] == "torch bfloat16")
    for row in rows:
        print(f"{row['variant']:18s} {row['chunks_per_s']:6.2f} chunks/s ({row['chunks_per_s'] / base:.2f}x torch "
              f"bfloat16)  query {row['query_ms_p50']:6.1f} ms  min cosine {row['min_cosine_vs_torch_float32']}")
    print(json.dumps(conditions))
    if args.out:
        args.out.write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
