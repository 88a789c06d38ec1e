"""`make bench`: every speed target as a ratio of two things measured side by side in one run, after a warm-up.

Each row compares the project's path with a baseline measured in the same run on the same machine (medians of
several repetitions), so the ratios hold on any machine; absolute values are printed too but marked
machine-dependent. Results go to bench/results.json as {"rows": [{name, value, baseline, ratio, target, meets}]}.
Nothing else may run a model meanwhile: on 2 cores a second model process slows both several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import rag  # noqa: F401  - offline environment first
from rag.answering.flow import answer, prepare_document_states, reading_context
from rag.answering.prompts import Context, build_prompt
from rag.evaluation.metrics import percentile
from rag.evaluation.questions import DEFAULT_QUESTIONS, DEFAULT_RGB_PATH, load_questions
from rag.evaluation.rgb import load_rgb, prepare_rgb, rgb_snippets, write_rgb_corpus
from rag.evaluation.runner import retrieval_metrics
from rag.files import write_text_atomically
from rag.generators.base import Generator, complete
from rag.generators.factory import get_generator, make_generator
from rag.generators.llamacpp import LlamaCppGenerator
from rag.indexing.build import build_index, index_folder, load_index
from rag.models.embedders import Embedder, get_embedder
from rag.models.names import embedder_location
from rag.models.registry import GENERATORS
from rag.retrieval import calibration, get_retriever, retrieve
from rag.settings import Settings, load_settings
from rag.types import Prefix
from tools.bench_pages import pages_corpus, pages_index_rows, pages_rows
from tools.results import RESULTS, Row, median, print_table, replace_rows

# ---------------------------------------------------------------- answers


# The previous release's flow: retrieved passages read afresh, the refusal sentence offered and a second look,
# no verifier, no part-by-part answers.
PREVIOUS_FLOW = {"whole_document": False, "offer_refusal": True, "verify": False, "partial_answers": False}


def answer_rows(settings: Settings, questions: list[str]) -> list[Row]:
    """Answer time of the default path (whole document from a kept state, verified) against the previous flow."""
    new, old, ttft = [], [], []
    for question in questions:  # interleaved, so both paths see the same machine conditions
        reply = answer(question, settings=settings)
        new.append(reply.timings["total_s"])
        ttft.append(reply.timings.get("ttft_s") or 0.0)
        old.append(answer(question, settings=settings.replace(**PREVIOUS_FLOW)).timings["total_s"])
    return [
        Row("answer time p50: whole document from a kept state ÷ retrieved passages (previous flow)", median(new),
            median(old), "<= 0.15", "s", f"{len(questions)} questions of the set, each both ways"),
        Row("answer time p50 (absolute, machine-dependent)", median(new), None, "<= 2.0", "s"),
        Row("time to first token p50 through rag.answer (absolute, machine-dependent)", median(ttft), None,
            "<= 1.0", "s"),
    ]


def decision_rows(settings: Settings, questions: list[str]) -> list[Row]:
    """What verifying costs: the default (judge, probes and the fitted decision) against no verification at all,
    interleaved on the seed article's questions, answerable and not (refusals are where extra probes run). The
    second answer to a question finds its prompt already in the generator's context, so the two ways take turns
    going first."""
    verified, bare = [], []
    for n, question in enumerate(questions):
        ways = [(verified, settings), (bare, settings.replace(verify=False))]
        for times, way in ways[::-1] if n % 2 else ways:
            times.append(answer(question, settings=way).timings["total_s"])
    note = f"{len(questions)} questions of the set (answerable and not), each both ways"
    return [
        Row("answer time p50: probes and fitted decision ÷ no verification", median(verified), median(bare),
            "<= 1.25", "s", note),
        Row("answer time p95: probes and fitted decision ÷ no verification", percentile(verified, 95),
            percentile(bare, 95), "<= 1.25", "s", note),
    ]


def multi_document_rows(settings: Settings, quick: bool) -> list[Row]:
    """Answers whose passages come from several documents (RGB queries at positions 50-99 over RGB snippets, one
    document each), against today's passages path: the same answer with nothing kept in the generator's context,
    so that its whole prompt is processed (what every such answer cost before the instructions were kept)."""
    rows = load_rgb(DEFAULT_RGB_PATH)
    chosen = rows[50:100:50 if quick else 5]
    if quick:  # only these queries' snippets
        corpus = settings.cache_dir / "benchmarks" / "rgb-quick" / "corpus"
        write_rgb_corpus(rgb_snippets(chosen), corpus)
        build_index([corpus], index_folder(settings, corpus), settings, progress=False)
    else:  # the pooled corpus of `rag eval --benchmark rgb`, and its index
        corpus = prepare_rgb(DEFAULT_RGB_PATH, settings)[1]
    generator = get_generator(settings)
    kept, afresh, kept_ttft, afresh_ttft, documents = [], [], [], [], []
    for row in chosen:  # interleaved: both ways see the same machine conditions
        reply = answer(str(row["query"]), settings=settings, corpus=corpus)
        kept.append(reply.timings["total_s"])
        kept_ttft.append(reply.timings.get("ttft_s") or 0.0)
        documents.append(len({p.doc_id for p in reply.passages}))
        if isinstance(generator, LlamaCppGenerator):
            generator.forget_kept()  # nothing kept, in the context or in RAM
        before = answer(str(row["query"]), settings=settings, corpus=corpus)
        afresh.append(before.timings["total_s"])
        afresh_ttft.append(before.timings.get("ttft_s") or 0.0)
    note = (f"{len(chosen)} RGB queries (positions 50-99), {median(documents):.0f} documents among the passages at "
            "the median; baseline: the same answers with the generator's context emptied first")
    return [
        Row("multi-document answer time p50: instructions kept ÷ prompt read afresh", median(kept), median(afresh),
            "<= 0.5", "s", note),
        Row("multi-document time to first token p50: instructions kept ÷ prompt read afresh", median(kept_ttft),
            median(afresh_ttft), "<= 0.35", "s"),
        Row("multi-document answer time p50 (absolute, machine-dependent)", median(kept), None, "<= 1.5", "s"),
        Row("multi-document time to first token p50 (absolute, machine-dependent)", median(kept_ttft), None, "<= 0.8",
            "s"),
    ]


# What issue 40's news handling adds to an answer: the time phrases resolved, near-copies folded, other articles
# asked whether they disagree. Turned off, the answer takes the path it took before.
NEWS_OFF = {"fold_copies": False, "conflict_checks": 0}


def news_rows(settings: Settings, questions: list[str], quick: bool, pages: bool = True) -> list[Row]:
    """The seed article's answer time and RGB's multi-document answer time with the news handling on and off
    (interleaved), and (with `pages`) indexing real web pages against encoding their chunks alone."""
    seed_on, seed_off = _interleaved(questions, settings, None)
    rows = load_rgb(DEFAULT_RGB_PATH)[50:100:25 if quick else 5]
    corpus = prepare_rgb(DEFAULT_RGB_PATH, settings)[1]
    rgb_on, rgb_off = _interleaved([str(row["query"]) for row in rows], settings, corpus)
    return [
        Row("seed answer time p50: news handling on ÷ off (dates, copy folding, disagreement checks)",
            median(seed_on), median(seed_off), "<= 1.1", "s", f"{len(questions)} questions, interleaved"),
        Row("multi-document answer time p50: disagreement checks on ÷ off (RGB positions 50-99)", median(rgb_on),
            median(rgb_off), "<= 1.2", "s", f"{len(rows)} RGB queries, interleaved"),
    ] + (pages_index_rows(settings, pages_corpus(settings, 30 if quick else 181)) if pages else [])


def _interleaved(questions: list[str], settings: Settings, corpus: Path | None) -> tuple[list[float], list[float]]:
    """Each question answered both ways, which one first alternating: the second answer to the same question finds
    its whole prompt already processed, so always putting one way second would flatter it (by 4.8 times on RGB)."""
    timed: dict[bool, list[float]] = {True: [], False: []}
    for n, question in enumerate(questions):
        for on in (True, False) if n % 2 == 0 else (False, True):
            ways = settings if on else settings.replace(**NEWS_OFF)
            timed[on].append(answer(question, settings=ways, corpus=corpus).timings["total_s"])
    return timed[True], timed[False]


def ttft_row(settings: Settings, questions: list[str]) -> Row:
    """Time to first token of a question's full prompt with the document's prefix kept (the context holds the
    previous question's prompt), against the same prompt processed with nothing kept."""
    generator = get_generator(settings)
    prompts = [build_prompt(q, _context(q, settings), settings) for q in questions]
    complete(generator, *prompts[-1][:1], 1, prefix=prompts[-1][1])
    warm, cold, tokens = [], [], []
    for messages, prefix in prompts:  # each follows another question, as in a conversation
        warm.append(_first_token_s(generator, messages, prefix))
    for messages, _ in prompts:
        generator._llm.reset()  # nothing kept: the whole prompt is processed
        cold.append(_first_token_s(generator, messages, None))
        tokens.append(generator.usage.prompt_tokens)
    return Row("time to first token: prefix kept ÷ the same prompt processed whole", median(warm), median(cold),
               "<= 0.1", "s", f"{len(prompts)} prompts of about {median(tokens):.0f} tokens")


def transformers_ttft_row(questions: list[str]) -> Row:
    """The same comparison for the transformers engine (the packaged 0.5B model, bf16), kept prefix in RAM."""
    settings = load_settings(generator="qwen2.5-coder-0.5b", engine="transformers")
    generator = make_generator(settings.generator, settings)
    warm, cold = [], []
    for question in questions:
        messages, prefix = build_prompt(question, _context(question, settings, generator), settings)
        cold.append(_first_token_s(generator, messages, None))
        complete(generator, messages, 1, prefix=prefix)  # the prefix's cache is now kept
        warm.append(_first_token_s(generator, messages, prefix))
    return Row("transformers engine, time to first token: prefix kept ÷ processed whole", median(warm), median(cold),
               "<= 0.1", "s", f"{settings.generator} in bf16, {len(questions)} prompts")


def server_ttft_row(settings: Settings, questions: list[str]) -> Row:
    """Through an OpenAI-compatible server (`--server URL`): time to first token with the document's prefix in the
    server's prompt cache, against the same prompt with its first words changed so that nothing is reused."""
    generator = get_generator(settings)
    prompts = [build_prompt(q, _context(q, settings), settings) for q in questions]
    complete(generator, prompts[-1][0], 1)
    warm, cold = [], []
    for messages, prefix in prompts:
        warm.append(_first_token_s(generator, messages, prefix))
    for number, (messages, _) in enumerate(prompts):
        changed = [{**messages[0], "content": f"(run {number}-{time.time_ns()}) {messages[0]['content']}"},
                   *messages[1:]]
        cold.append(_first_token_s(generator, changed, None))
    return Row("server, time to first token: prefix in the server's prompt cache ÷ the prompt processed whole",
               median(warm), median(cold), "<= 0.1", "s", f"{generator.name} at {settings.openai_base_url}")


def _context(question: str, settings: Settings, generator: Generator | None = None) -> Context:
    """What rag.answer reads for this question (the whole document, here)."""
    retriever = get_retriever(settings)
    return reading_context(question, retriever.run(question, settings.top_k), retriever,
                           generator or get_generator(settings), settings)


def _first_token_s(generator: Generator, messages: list[dict], prefix: Prefix | None) -> float:
    started = time.perf_counter()
    complete(generator, messages, 1, prefix=prefix)
    return time.perf_counter() - started


def decode_row(settings: Settings, questions: list[str]) -> Row:
    """Decode speed inside rag.answer against raw llama-cpp-python create_completion on the identical prompt."""
    generator = get_generator(settings)
    ours, raw = [], []
    for question in questions:
        call = answer(question, settings=settings).usage["calls"][0]
        if call.get("completion_tokens", 0) < 8:
            continue
        ours.append((call["completion_tokens"] - 1) / call["decode_s"])
        messages, prefix = build_prompt(question, _context(question, settings), settings)
        complete(generator, messages, 1, prefix=prefix)  # the same kept prefix as inside rag.answer
        tokens = generator._llm.tokenize(generator.render(messages).encode("utf-8"), add_bos=False, special=True)
        raw.append(_raw_decode_rate(generator, tokens, call["completion_tokens"]))
    return Row("decode tokens/s: through rag.answer ÷ raw create_completion, identical prompt", median(ours),
               median(raw), ">= 0.95", "tokens/s", f"{len(ours)} answers")


def _raw_decode_rate(generator: LlamaCppGenerator, tokens: list[int], n: int) -> float:
    first, count = None, 0
    for _ in generator._llm.create_completion(tokens, max_tokens=n, temperature=0.0, top_k=1, stream=True):
        count += 1
        first = first or time.perf_counter()
    return (count - 1) / (time.perf_counter() - first)


# ---------------------------------------------------------------- retrieval and indexing


def retrieval_rows(settings: Settings, questions: list[str], repetitions: int) -> list[Row]:
    """retrieve() against the bare minimum: encoding the query and one FAISS search."""
    retriever = get_retriever(settings)
    embedder = get_embedder(settings)
    k = settings.top_k
    full, dense_only, bare = [], [], []
    dense_settings = settings.replace(bm25=False)
    for _ in range(repetitions):
        for question in questions:
            full.append(_seconds(lambda q=question: retrieve(q, k, settings)))
            dense_only.append(_seconds(lambda q=question: retrieve(q, k, dense_settings)))
            bare.append(_seconds(lambda q=question: retriever.index.store.search(embedder.embed_query(q), k)))
    return [
        Row("retrieval p50: retrieve() ÷ query encoding + FAISS search", median(full), median(bare), "<= 1.3", "s"),
        Row("retrieval p50 without BM25 ÷ with it (what BM25 and fusion add)", median(dense_only), median(full), "",
            "s"),
    ]


def _seconds(work) -> float:  # noqa: ANN001 - any callable
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def index_rows(settings: Settings, copies: int, repetitions: int) -> list[Row]:
    """`rag index --rebuild` chunks/s against SentenceTransformer.encode on the same chunk texts, alternated;
    then what saving a document's generator state costs (computed from nothing into an empty cache)."""
    article = next(settings.corpus_dir.glob("*.txt")).read_text(encoding="utf-8")
    model = get_embedder(settings).model
    ours, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for n in range(copies):  # distinct files, so none is skipped as a duplicate
            (corpus / f"copy-{n:02d}.txt").write_text(f"Copy {n}: {article}", encoding="utf-8")
        for _ in range(repetitions):
            report = build_index([corpus], Path(tmp) / "index", settings, rebuild=True, progress=False)
            ours.append(report.chunks_per_s)
            texts = [chunk.text for chunk in load_index(Path(tmp) / "index").chunks]
            started = time.perf_counter()
            model.encode_document(texts, batch_size=settings.embed_batch_size, normalize_embeddings=True)
            raw.append(len(texts) / (time.perf_counter() - started))
        fresh = settings.replace(cache_dir=Path(tmp) / "cache")
        _link_models(settings, fresh)
        started = time.perf_counter()
        prepare_document_states(fresh, corpus=settings.corpus_dir)
        state_s = time.perf_counter() - started
    return [
        Row("index build chunks/s: rag index --rebuild ÷ raw SentenceTransformer.encode_document",
            round(median(ours), 1), round(median(raw), 1), ">= 0.9", "chunks/s",
            f"{report.chunks} chunks, sentence chunking included"),
        Row("saving one document's generator state (seed article, model load included)", round(state_s, 2), None, "",
            "s", "once per document and model; `rag index` does it, or the first question"),
    ]


def _link_models(settings: Settings, fresh: Settings) -> None:
    """Let a settings copy with an empty cache use the already assembled model files (no re-assembly)."""
    fresh.models_dir.mkdir(parents=True, exist_ok=True)
    for path in settings.models_dir.iterdir():
        (fresh.models_dir / path.name).symlink_to(path)


# ---------------------------------------------------------------- processes


def cold_start_row(settings: Settings, question: str, repetitions: int) -> Row:
    """`rag ask` in a new process against its parts measured in another new process (importing and loading both
    models, restoring the document's saved state, answering once more with it warm), alternated."""
    env = {**os.environ, "RAG_GENERATOR": settings.generator}
    asks, parts = [], []
    for _ in range(repetitions):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rag.cli", "ask", question], capture_output=True, text=True, env=env,
                       timeout=600, check=True)
        asks.append(time.perf_counter() - started)
        done = subprocess.run([sys.executable, "-m", "tools.bench", "--parts", question], capture_output=True,
                              text=True, env=env, timeout=600, check=True)
        parts.append(json.loads(done.stdout.splitlines()[-1]))
    typical = {key: median([p[key] for p in parts]) for key in parts[0]}
    return Row("cold start: rag ask in a new process ÷ (model load + state restore + one warm answer)",
               round(median(asks), 2), round(median([sum(p.values()) for p in parts]), 2), "<= 1.5", "s",
               ", ".join(f"{k} {v:.2f} s" for k, v in typical.items()))


def cold_start_parts(question: str) -> dict[str, float]:
    """Run in a new process: the seconds of each part `rag ask` cannot avoid."""
    started = time.perf_counter()
    settings = load_settings()
    Embedder(settings.embedder, settings).warm_up()
    generator = make_generator(settings.generator, settings)
    generator.warm_up()
    load_s = time.perf_counter() - started
    retriever = get_retriever(settings)
    context = reading_context(question, retriever.run(question, settings.top_k), retriever, generator, settings)
    restore = generator.prefill(*build_prompt(question, context, settings))
    answer(question, settings=settings)  # the shared generator of answer() is another instance: warm it
    warm = answer(question, settings=settings)
    return {"model load": load_s, "state restore": restore.prefix_s, "warm answer": warm.timings["total_s"]}


def rss_row(name: str, question: str) -> Row:
    """Peak resident memory of `rag chat` with one generator, after it answered one question."""

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RAG_GENERATOR": name, "RAG_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "chat"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        client = _connect(f"http://127.0.0.1:{port}/", server)
        client.predict(question, api_name="/ask")
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return Row(f"peak RSS of rag chat with {name}", peak, None, "", "MB", "after one question")


def peak_rss_mb(pid: int | str = "self") -> int:
    """The highest resident memory a process has had (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return round(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def _connect(url: str, server: subprocess.Popen):  # noqa: ANN202 - a gradio_client.Client
    from gradio_client import Client

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"rag chat exited with {server.returncode}")
        try:
            return Client(url, verbose=False)
        except Exception:  # not listening yet
            time.sleep(1)
    raise TimeoutError(f"rag chat did not start at {url}")


# ---------------------------------------------------------------- embedders


EMBEDDERS_RESULTS = Path("bench") / "embedders.json"
DEPTHS = ("retrieval_hit_at_1", "retrieval_hit_at_3", "retrieval_hit_at_5", "mrr_at_5")


def embedder_report(name: str) -> dict:
    """Run in a new process per embedder (so that its peak memory is its own): a fresh index of the pooled RGB
    corpus (chunks/s, disk), query encoding time, and retrieval on RGB (all 100 queries, and positions 50-99 on
    which choices are made) and on the project's set, with the embedder's calibrated retrieval settings."""
    from rag.evaluation.questions import select_positions
    from rag.evaluation.rgb import rgb_questions

    settings = load_settings(embedder=name)
    embedder = get_embedder(settings)
    started = time.perf_counter()
    embedder.warm_up()
    load_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        local = settings.replace(index_dir=Path(tmp) / "index")
        rows = load_rgb(DEFAULT_RGB_PATH)
        corpus = local.cache_dir / "benchmarks" / "rgb" / "corpus"
        write_rgb_corpus(rgb_snippets(rows), corpus)
        report = build_index([corpus], index_folder(local, corpus), local, rebuild=True, progress=False)
        index_mb = sum(f.stat().st_size for f in index_folder(local, corpus).rglob("*") if f.is_file()) / 1e6
        questions = rgb_questions(rows)
        project = load_questions(settings.corpus_dir / DEFAULT_QUESTIONS)
        project_local = local.replace(corpus_dir=settings.corpus_dir, index_dir=Path(tmp) / "project")
        times = []
        for question in [q.question for q in questions] + [q.question for q in project]:
            times.append(_seconds(lambda q=question: embedder.embed_query(q)))
        retrieval = {
            "rgb_all": retrieval_metrics(questions, local, corpus),
            "rgb_50_99": retrieval_metrics(select_positions(questions, "50-99"), local, corpus),
            "rgb_all_dense_only": retrieval_metrics(questions, local.replace(bm25=False), corpus),
            "project": retrieval_metrics(project, project_local),
        }
    location = Path(embedder_location(name, settings))
    return {"embedder": name, "dim": embedder.dim, "load_s": round(load_s, 2), "chunks": report.chunks,
            "chunks_per_s": round(report.chunks_per_s, 1), "index_mb": round(index_mb, 1),
            "model_mb": round(_size(location) / 1e6), "query_ms_p50": round(1000 * statistics.median(times), 1),
            "peak_rss_mb": peak_rss_mb(), "calibration": asdict(calibration(settings)),
            "retrieval": {k: {d: round(v[d], 3) for d in DEPTHS} for k, v in retrieval.items()}}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def embedders_table(names: list[str], out: Path) -> list[dict]:
    """One new process per embedder, one after the other; the table printed and written to `out`."""
    reports = []
    for name in names:
        done = subprocess.run([sys.executable, "-m", "tools.bench", "--embedder-report", name], capture_output=True,
                              text=True, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
        reports.append(json.loads(done.stdout.splitlines()[-1]))
    print("| embedder | RGB hit@1 / @3 / @5, MRR@5 (100) | RGB 50-99 | RGB dense only (100) | "
          "project set (answerable) | query ms p50 | chunks/s | peak RSS | model | index (969 passages) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        cells = [" / ".join(f"{r['retrieval'][k][d]:.2f}" for d in DEPTHS)
                 for k in ("rgb_all", "rgb_50_99", "rgb_all_dense_only", "project")]
        print(f"| {r['embedder']} ({r['dim']}-d) | " + " | ".join(cells) + f" | {r['query_ms_p50']} | "
              f"{r['chunks_per_s']} | {r['peak_rss_mb']} MB | {r['model_mb']} MB | {r['index_mb']} MB |")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps({"embedders": reports}, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return reports


# ---------------------------------------------------------------- main


def run(settings: Settings, quick: bool) -> list[Row]:
    questions = [q.question for q in load_questions(settings.corpus_dir / DEFAULT_QUESTIONS)
                 if not q.unanswerable]
    sample = questions[:1] if quick else questions[::4]  # every 4th answerable question (27 of the 106)
    warm = questions[1]
    answer(warm, settings=settings)  # warm-up: models, index and the document's state
    answer(warm, settings=settings.replace(**PREVIOUS_FLOW))
    repetitions = 1 if quick else 3
    rows = answer_rows(settings, sample)
    rows += decision_rows(settings, decision_sample(settings, quick))
    rows += multi_document_rows(settings, quick)
    rows += news_rows(settings, sample, quick, pages=False)  # the pages' rows come with the 181-page scenario
    rows += pages_rows(settings, 30 if quick else 181, 4 if quick else 20, exported=not quick)
    rows.append(ttft_row(settings, sample[:repetitions]))  # a cold prompt costs seconds: a few suffice
    rows.append(transformers_ttft_row(sample[:repetitions]))
    rows.append(decode_row(settings, sample))
    rows += retrieval_rows(settings, sample, repetitions)
    rows += index_rows(settings, 2 if quick else 20, repetitions)
    rows.append(cold_start_row(settings, warm, 1 if quick else 3))
    from tools.bench_api import api_rows  # its own module (tools/bench_api.py); it imports this one

    rows += api_rows(settings, sample)
    for name in (["qwen2.5-coder-0.5b"] if quick else GENERATORS):
        rows.append(rss_row(name, warm))
    return rows


def decision_sample(settings: Settings, quick: bool) -> list[str]:
    """Every 4th question of the set (every 100th for --quick), answerable and unanswerable alike."""
    questions = [q.question for q in load_questions(settings.corpus_dir / DEFAULT_QUESTIONS)]
    return questions[:: 100 if quick else 4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few questions, one small generator")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS})")
    parser.add_argument("--server", metavar="URL", help="only the prompt-cache row, through an OpenAI-compatible "
                        "server at URL (key from openai_api_key_env); results to bench/server.json")
    parser.add_argument("--embedders", metavar="NAMES", help="only the embedder table (comma-separated registry "
                        "names, e.g. minilm,embeddinggemma): retrieval, speed and memory; to bench/embedders.json")
    parser.add_argument("--multi-document", action="store_true", help="only the multi-document rows, replacing "
                        "those rows of the results file")
    parser.add_argument("--decision", action="store_true", help="only the rows of what verifying costs, replacing "
                        "those rows of the results file")
    parser.add_argument("--news", action="store_true", help="only the rows of what the news handling costs (dates, "
                        "copies, disagreement; indexing saved web pages), replacing those rows of the results file")
    parser.add_argument("--parts", metavar="QUESTION", help=argparse.SUPPRESS)  # cold_start_parts in a new process
    parser.add_argument("--embedder-report", metavar="NAME", help=argparse.SUPPRESS)  # embedder_report, new process
    args = parser.parse_args(argv)
    if args.parts:
        print(json.dumps(cold_start_parts(args.parts)))
        return 0
    if args.embedder_report:
        print(json.dumps(embedder_report(args.embedder_report)))
        return 0
    if args.multi_document or args.decision or args.news:
        settings = load_settings()
        if args.decision or args.news:
            answer(decision_sample(settings, True)[0], settings=settings)  # warm-up: models, index, state
        if args.news:
            rows = news_rows(settings, decision_sample(settings, args.quick), args.quick)
        else:
            rows = decision_rows(settings, decision_sample(settings, args.quick)) if args.decision else \
                multi_document_rows(settings, args.quick)
        print_table(rows)
        replace_rows(args.out, rows)
        return 0
    if args.embedders:
        embedders_table(args.embedders.split(","), args.out if args.out != RESULTS else EMBEDDERS_RESULTS)
        return 0
    settings = load_settings()
    started = time.perf_counter()
    if args.server:
        settings = settings.replace(generator="openai:", openai_base_url=args.server)
        questions = [q.question for q in load_questions(settings.corpus_dir / DEFAULT_QUESTIONS)]
        rows = [server_ttft_row(settings, questions[:: 40][:3])]
        args.out = args.out if args.out != RESULTS else RESULTS.with_name("server.json")
    else:
        rows = run(settings, args.quick)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out, json.dumps({"rows": [r.to_dict() for r in rows], "generator": settings.generator,
                                                "quick": args.quick, "seconds": round(time.perf_counter() - started)},
                                               indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
