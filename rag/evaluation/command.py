"""The `rag eval` command: choosing the question set, running it, writing outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.evaluation.questions import (
    DEFAULT_QUESTIONS,
    DEFAULT_RGB_PATH,
    RETRIEVAL_DEPTHS,
    EvaluationError,
    Question,
    load_questions,
    select_positions,
    select_split,
)
from rag.evaluation.report import format_value, metrics_table
from rag.evaluation.rgb import prepare_rgb
from rag.evaluation.runner import QAEvaluator, relevance_ranges, retrieval_metrics
from rag.files import write_text_atomically
from rag.retrieval import get_retriever
from rag.settings import Settings

# ---------------------------------------------------------------- command line


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """`rag eval`: run the evaluation, write the outputs, print the summary."""
    name = args.benchmark or "project"
    if args.benchmark and args.split not in (None, "all"):
        raise EvaluationError("--split selects from the project's question set, not from a benchmark")
    reject = getattr(args, "reject", None)
    condition = "conflict" if getattr(args, "conflict", False) else (
        "counterfactual" if getattr(args, "counterfactual", False) else None)
    copies = getattr(args, "copies", 0) or 0
    if (reject or condition or copies) and args.benchmark != "rgb":
        raise EvaluationError("--reject, --conflict, --counterfactual and --copies are conditions of --benchmark rgb")
    if sum(map(bool, (reject, condition))) > 1 or (getattr(args, "conflict", False)
                                                    and getattr(args, "counterfactual", False)):
        raise EvaluationError("choose one of --reject, --conflict and --counterfactual")
    if not 0 <= copies <= 3:
        raise EvaluationError(f"--copies: 0 to 3 edited copies of each snippet, got {copies}")
    if args.benchmark == "rgb":
        if args.corpus:
            raise EvaluationError("--corpus cannot be combined with --benchmark rgb (it brings its own corpus)")
        questions, corpus, note = prepare_rgb(args.benchmark_path or DEFAULT_RGB_PATH, settings,
                                              getattr(args, "queries", None), reject, condition, copies)
        name += "-reject" if reject else f"-{condition}" if condition else ""
        name += f"-copies{copies}" if copies else ""
        print(note, file=sys.stderr)
    else:
        questions = select_split(load_questions(args.questions or settings.corpus_dir / DEFAULT_QUESTIONS),
                                 args.split)
        corpus = args.corpus
        if getattr(args, "queries", None):
            questions = select_positions(questions, args.queries)
    if args.limit is not None:
        if args.limit < 1:
            raise EvaluationError(f"--limit must be at least 1, got {args.limit}")
        questions = questions[: args.limit]
    out_dir = args.out or Path("eval-results") / name
    if getattr(args, "retrieval_only", False):
        return _retrieval_only(questions, settings, corpus, out_dir)
    evaluator = QAEvaluator(questions, settings, corpus, name=name)
    metrics = evaluator(out_dir)
    print("\n".join(metrics_table(metrics)))
    wrong = sum(not r.correct for r in evaluator.results)
    print(f"\n{wrong} wrong of {len(questions)}; results, metrics, report and chart in {out_dir}/")
    return 0


def _retrieval_only(questions: list[Question], settings: Settings, corpus: Path | None, out_dir: Path) -> int:
    """hit@1/3/5 and MRR@5 for hybrid, dense-only and BM25-only retrieval, and the best-passage similarity
    ranges (no generator), into retrieval.json."""
    variants = {"hybrid": settings, "dense": settings.replace(bm25=False), "bm25": settings.replace(dense=False)}
    table = {label: retrieval_metrics(questions, s, corpus) for label, s in variants.items()}
    table["best_relevance"] = relevance_ranges(questions, settings, corpus)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "retrieval.json", json.dumps(table, indent=2) + "\n")
    keys = [f"retrieval_hit_at_{d}" for d in RETRIEVAL_DEPTHS] + ["mrr_at_5"]
    print("| retrieval | " + " | ".join(keys) + " |\n|" + " --- |" * (len(keys) + 1))
    for label in variants:
        print(f"| {label} | " + " | ".join(format_value(table[label][k]) for k in keys) + " |")
    floor = get_retriever(settings, corpus).calibration.min_relevance
    print(f"\nbest passage similarity (min_relevance is {floor}):")
    for group, span in table["best_relevance"].items():
        print(f"  {group}: {span['min']:.3f} to {span['max']:.3f} ({span['questions']} questions)")
    print(f"\nwritten to {out_dir / 'retrieval.json'}")
    return 0

