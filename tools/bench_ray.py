"""`rag index` embedding in this process against Ray Data workers on a local Ray (rag.indexing.distributed).

`python -m tools.bench_ray --documents N [--embedder minilm]` writes bench/ray.json. The documents are the synthetic
one-chunk articles of `python -m tools.bench_scale --index-memory` (three sentences of the seed article each). Both
paths are whole `rag index` builds (rag.indexing.build.build_index) of the same articles, one after the other in this
process; chunks/s is the build's own (reading, chunking and embedding the new articles). The in-process embedder
is loaded before its build starts; the Ray path's time includes starting Ray, starting its workers and loading the
model in them. The load average is recorded: a busy machine slows both.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rag.files import write_text_atomically
from rag.indexing.build import build_index, load_index
from rag.models.embedders import bound_index_memory, get_embedder
from rag.settings import Settings, load_settings
from tools.bench_scale import SEED, synthetic_corpus

OUT = Path("bench/ray.json")


def timed_build(corpus: Path, settings: Settings, ray: str | None) -> tuple[dict[str, Any], np.ndarray]:
    """A whole `rag index` build of `corpus` into a temporary folder: its embedding time and chunks/s, its vectors."""
    with tempfile.TemporaryDirectory() as tmp:
        report = build_index([corpus], Path(tmp) / "index", settings, progress=False, ray=ray)
        vectors = np.array(load_index(Path(tmp) / "index").vectors)
    return {"seconds": round(report.embed_seconds, 2), "chunks_per_s": round(report.chunks_per_s, 1)}, vectors


def table(result: dict[str, Any]) -> str:
    here, far = result["in_process"], result["ray"]
    return "\n".join([
        f"{result['documents']:,} documents, {result['chunks']:,} chunks, {result['embedder']}, "
        f"{result['cpus']} CPUs, load average {result['load_before']} before, {result['load_after']} after",
        "| path | seconds | chunks/s |", "|---|---|---|",
        f"| rag index, in process | {here['seconds']} | {here['chunks_per_s']} |",
        f"| rag index --ray (local Ray) | {far['seconds']} | {far['chunks_per_s']} |",
        f"ratio Ray / in process: {result['ratio']}; lowest cosine between the paths' vectors {result['min_cosine']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000, help="synthetic one-chunk articles")
    parser.add_argument("--embedder", help="the embedder (default: the settings'; minilm is about 10x faster)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    settings = load_settings(embedder=args.embedder)
    bound_index_memory()  # as `rag index` does (its Ray workers call it themselves)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_corpus(Path(tmp), args.documents, SEED)
        get_embedder(settings).warm_up()  # loading the model is not embedding speed (rag index does the same)
        here, mine = timed_build(Path(tmp), settings, None)
        far, theirs = timed_build(Path(tmp), settings, "local")
    result = {"documents": args.documents, "chunks": len(mine), "embedder": settings.embedder,
              "cpus": os.cpu_count(), "in_process": here, "ray": far,
              "ratio": round(far["chunks_per_s"] / here["chunks_per_s"], 3),
              "min_cosine": round(float((mine * theirs).sum(axis=1).min()), 6),
              "load_before": load_before, "load_after": round(os.getloadavg()[0], 2)}
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
