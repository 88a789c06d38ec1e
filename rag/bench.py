"""`make bench`: load times, decode speed of both engines and index build speed, measured side by side in one run."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rag  # noqa: F401  - offline environment first
from rag.generation import generate, make_generator
from rag.index import build_index
from rag.models import GENERATORS, get_embedder
from rag.settings import Settings, load_settings

PROMPT = [{"role": "user", "content": "Write a short paragraph about memory chips."}]


def bench_engine(name: str, engine: str, settings: Settings, tokens: int) -> dict[str, float]:
    """Load time, then decode speed over `tokens` new tokens (best of two runs)."""
    generator = make_generator(name, settings.replace(engine=engine))
    started = time.perf_counter()
    generator.warm_up()
    load_s = time.perf_counter() - started
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        text = generate(generator, PROMPT, max_tokens=tokens)
        runs.append(generator.count_tokens(text) / (time.perf_counter() - started))
    return {"load_s": round(load_s, 2), "tokens_per_s": round(max(runs), 1)}


def bench_index(settings: Settings, corpus: Path) -> dict[str, float]:
    get_embedder(settings).warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        report = build_index([corpus], Path(tmp), settings, rebuild=True, progress=False)
        again = build_index([corpus], Path(tmp), settings, progress=False)
    return {"documents": report.documents, "chunks": report.chunks, "build_s": round(report.seconds, 2),
            "chunks_per_s": round(report.chunks_per_s, 1), "noop_rebuild_s": round(again.seconds, 3)}


def bench_answers(settings: Settings, questions: list[str]) -> dict[str, float]:
    from rag.answer import answer

    answer(questions[0], settings=settings)  # warm-up: model load and index
    latencies = [answer(q, settings=settings).timings for q in questions]
    total = [t["total_s"] for t in latencies]
    return {"p50_s": round(statistics.median(total), 2), "max_s": round(max(total), 2),
            "ttft_p50_s": round(statistics.median(t["ttft_s"] for t in latencies), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.bench", description=__doc__)
    parser.add_argument("--tokens", type=int, default=96, help="new tokens per decode run")
    parser.add_argument("--skip-transformers", action="store_true", help="only the llama.cpp engine")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    settings = load_settings()
    results: dict[str, dict] = {"index": bench_index(settings, settings.corpus_dir)}
    print(f"index: {results['index']}", flush=True)
    questions = ["How much will South Korea invest in daily AI for all people?",
                 "When did Zuckerberg last visit South Korea?",
                 "How much did chip exports grow in February?",
                 "Who is South Korea's science minister?"]
    for name in GENERATORS:
        engines = ["llama-cpp"] if args.skip_transformers else ["llama-cpp", "transformers"]
        for engine in engines:
            key = f"{name}/{engine}"
            results[key] = bench_engine(name, engine, settings, args.tokens)
            print(f"{key}: {results[key]}", flush=True)
        results[f"{name}/answers"] = bench_answers(settings.replace(generator=name), questions)
        print(f"{name}/answers: {results[f'{name}/answers']}", flush=True)
    for name in GENERATORS:
        fast, slow = results.get(f"{name}/llama-cpp"), results.get(f"{name}/transformers")
        if fast and slow:
            print(f"{name}: llama.cpp decodes {fast['tokens_per_s'] / slow['tokens_per_s']:.1f}x faster than "
                  f"transformers (bf16) in this run")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
