"""Running a question set through `answer` and computing the metrics."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from rag.answering.flow import answer
from rag.evaluation.metrics import (
    detect_refusal,
    exact_match,
    f1,
    first_relevant_rank,
    mean,
    percentile,
)
from rag.evaluation.questions import RETRIEVAL_DEPTHS, Metrics, Question
from rag.evaluation.report import write_outputs
from rag.evaluation.result import Result
from rag.retrieval import get_retriever
from rag.settings import Settings

# ---------------------------------------------------------------- the evaluator


class QAEvaluator:
    """Runs every question through `rag.answer` and scores the answers (sentence-transformers style).

    `evaluator(out_dir)` returns the metrics and, given a folder, writes results.jsonl, metrics.json,
    report.md and metrics.png into it. The per-question results stay in `evaluator.results`.
    """

    def __init__(self, questions: list[Question], settings: Settings, corpus: Path | None = None,
                 k: int | None = None, name: str = "project") -> None:
        self.questions = questions
        self.settings = settings.replace(top_k=k) if k else settings
        self.corpus = corpus
        self.name = name
        self.results: list[Result] = []

    def __call__(self, out_dir: Path | None = None) -> Metrics:
        retriever = get_retriever(self.settings, self.corpus)
        self.results = []
        for question in tqdm(self.questions, desc=f"eval {self.name}", unit="q"):
            reply = answer(question.question, settings=self.settings, corpus=self.corpus)
            refused = reply.refused or (not reply.partial and detect_refusal(reply.text, False,
                                                                              self.settings.refusal_text))
            self.results.append(Result(question, reply, refused, retriever.run(question.question, 5)))
        metrics = compute_metrics(self.results, self.settings)
        if out_dir is not None:
            write_outputs(Path(out_dir), self.results, metrics, self.name)
        return metrics


def compute_metrics(results: list[Result], settings: Settings) -> Metrics:
    """The metrics of metrics.json; time to first token only counts answers that reached the generator."""
    answerable = [r for r in results if not r.question.unanswerable]
    unanswerable = [r for r in results if r.question.unanswerable]
    answered = [r for r in results if not r.refused]
    partial = [r for r in answerable if r.question.extra.get("type") == "partial"]
    cited = [r.cited_gold for r in answerable if r.cited_gold is not None]
    closest = [r.closest_gold for r in answerable if r.closest_gold is not None]
    closest_any = [r.closest_if_refused_gold for r in answerable if r.closest_if_refused_gold is not None]
    latencies = [r.answer.timings.get("total_s", 0.0) for r in results]
    ttfts = [r.answer.timings["ttft_s"] for r in results if r.answer.timings.get("ttft_s")]
    probes = [r.answer.timings.get("verify_s", 0.0) for r in results if r.answer.timings.get("ttft_s")]
    verified = [r.answer.verdict for r in results if r.answer.verdict]
    generator = next((r.answer.models.get("generator") for r in results if r.answer.models), settings.generator)
    return {
        "answer_accuracy": mean(float(r.found) for r in answerable),
        "exact_match": mean(exact_match(r.prediction, r.question.answers) for r in answerable),
        "f1": mean(f1(r.prediction, r.question.answers) for r in answerable),
        "retrieval_hit_at_k": mean(float(r.rank is not None) for r in answerable),
        "mrr": mean(1 / r.rank if r.rank else 0.0 for r in answerable),
        **depth_metrics([r.rank_at_5 for r in answerable]),
        "first_source_hit": mean(float(r.first_source_gold) for r in answerable),  # cited first, as the page shows
        "refusal_accuracy": mean(float(r.refused) for r in unanswerable),
        "false_refusal_rate": mean(float(r.refused) for r in answerable),
        # the false refusals whose reply was right (the rest refused a wrong reply, or refused before replying)
        "right_replies_refused": mean(float(r.refused_right is True) for r in answerable),
        "citation_accuracy": mean(map(float, cited)),
        "closest_holds_gold": mean(map(float, closest)),  # over the answerable questions refused
        "closest_if_refused": mean(map(float, closest_any)),  # the same rule over every answerable question
        "unsupported_rate": mean(float(bool(r.answer.unsupported)) for r in answered),
        "partial_answer_rate": mean(float(r.found and r.answer.partial) for r in partial) if partial else None,
        "words_altered": sum(r.words_kept is False for r in results),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "ttft_p50_s": percentile(ttfts, 50),
        # the judge and the probes, over the answers that reached the generator (0 where none ran)
        "probes_p50_s": percentile(probes, 50),
        "probes_p95_s": percentile(probes, 95),
        # replies the fitted decision's screen settled before the judge's pass, over the verified ones
        "settled_without_judge": mean(float(v.get("judged") is False) for v in verified),
        # saying the articles disagree: over the answers given (on normal RGB every one is a false disagreement);
        # the conflict condition's queries answered with both reports cited; the counterfactual answer given
        "disagreement_rate": mean(float(r.answer.conflict) for r in answered),
        "both_named": mean(float(r.both_named) for r in results if r.both_named is not None),
        "fake_answer_rate": mean(float(r.fake_given) for r in results
                                 if r.fake_given is not None and r.question.extra.get("condition")),
        "distinct_reports_at_5": mean(float(r.distinct_reports_at_5) for r in results),
        "questions": len(results), "answerable": len(answerable), "unanswerable": len(unanswerable),
        "answered": len(answered), "k": settings.top_k, "generator": generator, "embedder": settings.embedder,
    }


def depth_metrics(ranks: list[int | None]) -> Metrics:
    """hit@1/@3/@5 and MRR@5 from the rank of the first relevant passage of each question."""
    hits = {f"retrieval_hit_at_{d}": mean(float(r is not None and r <= d) for r in ranks) for d in RETRIEVAL_DEPTHS}
    return {**hits, "mrr_at_5": mean(1 / r if r else 0.0 for r in ranks)}


def retrieval_metrics(questions: list[Question], settings: Settings, corpus: Path | None = None) -> Metrics:
    """Retrieval only (no generator): hit@1/3/5 and MRR@5 over the answerable questions.

    Compare the stages with `settings.replace(dense=False)` (BM25 only) or `settings.replace(bm25=False)`.
    """
    retriever = get_retriever(settings, corpus)
    answerable = [q for q in questions if not q.unanswerable]
    ranks = [first_relevant_rank(retriever.run(q.question, 5), q) for q in answerable]
    return {**depth_metrics(ranks), "answerable": len(answerable), "dense": settings.dense, "bm25": settings.bm25,
            "embedder": settings.embedder}


def relevance_ranges(questions: list[Question], settings: Settings, corpus: Path | None = None) -> Metrics:
    """The best passage's dense similarity per group of questions (answerable; unanswerable ones by their
    `type`), the numbers `min_relevance` is calibrated on."""
    retriever = get_retriever(settings, corpus)
    groups: dict[str, list[float]] = {}
    for q in questions:
        group = str(q.extra.get("type", "unanswerable")) if q.unanswerable else "answerable"
        best = max((p.relevance for p in retriever.run(q.question, settings.top_k)), default=0.0)
        groups.setdefault(group, []).append(best)
    return {group: {"questions": len(values), "min": round(min(values), 3), "max": round(max(values), 3)}
            for group, values in groups.items()}
