"""What the focus check and detail trimming did in a `rag eval` run (issue 41): the run's answer accuracy,
refusal accuracy and false refusals as they came out, and as they would have been without the focus check
(each reply it refused counted as the checked answer it refused), with the replies trimmed and how many of
those were right.

    python -m tools.study_focus eval-results/test/results.jsonl [--rgb] [more results.jsonl ...]

The focus check is the last step of an answer, so taking it back gives the run without it; trimming is not:
compare a run with `RAG_TRIM_DETAILS=false`. With `--recheck CORPUS` (the run's corpus folder; `default` for the
project's), each reply the run's focus check refused is checked again by the check as it is now in
rag/answering/focus.py, over the same passages: how a run under an earlier, stricter rule would have come out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rag.answering.citations import check_citations
from rag.answering.focus import missing_focus
from rag.evaluation.metrics import contains_answer, rgb_correct
from rag.retrieval import Retriever, get_retriever, passage_of
from rag.settings import load_settings
from rag.text import strip_markers


def outcomes(rows: list[dict[str, Any]], rgb: bool, focus: bool) -> dict[str, float | int]:
    """Answer accuracy, refusal accuracy and false refusals, with the focus check or without it."""
    answered_right = refused_unanswerable = refused_answerable = 0
    answerable = [r for r in rows if not r["unanswerable"]]
    for row in rows:
        unfocused = (row.get("verdict") or {}).get("unfocused")
        refused, text = row["refused"], row["prediction"]
        if not focus and row["refusal_reason"] == "focus" and unfocused:
            refused, text = False, unfocused["text"]
        if row["unanswerable"]:
            refused_unanswerable += refused
        elif refused:
            refused_answerable += 1
        else:
            answered_right += _found(strip_markers(text), row["answers"], rgb)
    unanswerable = len(rows) - len(answerable)
    return {"answer_accuracy": round(answered_right / len(answerable), 3) if answerable else 0.0,
            "refusal_accuracy": round(refused_unanswerable / unanswerable, 3) if unanswerable else 0.0,
            "false_refusals": round(refused_answerable / len(answerable), 3) if answerable else 0.0,
            "answerable": len(answerable), "unanswerable": unanswerable}


def _found(text: str, gold: Any, rgb: bool) -> bool:
    """Whether a reply holds the gold answer, by RGB's rule or the project set's."""
    return rgb_correct(text, gold) if rgb else contains_answer(text, gold)


def recheck(rows: list[dict[str, Any]], corpus: Path | None) -> int:
    """Re-check each reply the run's focus check refused with today's check, over the passages it was read with;
    a reply that passes now counts as answered (its row is changed in place). Returns how many passed."""
    settings = load_settings()
    retriever = get_retriever(settings, corpus)
    passed = 0
    for row in rows:
        unfocused = (row.get("verdict") or {}).get("unfocused")
        if row["refusal_reason"] != "focus" or not unfocused:
            continue
        passages = _passages_read(row, retriever)
        checked = check_citations(unfocused["text"], passages, settings.min_support)
        if not missing_focus(row.get("rewritten_question") or row["question"], checked, passages):
            row["refusal_reason"], row["refused"], row["prediction"] = "", False, unfocused["text"]
            passed += 1
    return passed


def _passages_read(row: dict[str, Any], retriever: Retriever) -> list:
    """The passages a reply's markers number: the whole document's chunks, or the retrieved passages in order."""
    chunks = {c.id: c for c in retriever.index.chunks}
    retrieved = [passage_of(chunks[i], documents=retriever.index.documents) for i in row["retrieved"]]
    if (row.get("usage") or {}).get("context") == "document" and retrieved:
        return retriever.document_passages(retrieved[0].doc_id, retrieved)
    return retrieved


def trimmed(rows: list[dict[str, Any]], rgb: bool) -> dict[str, int]:
    """Replies with a detail trimmed, and of those the answerable ones answered right."""
    cut = [r for r in rows if (r.get("verdict") or {}).get("trimmed")]
    right = sum(not r["refused"] and not r["unanswerable"] and _found(r["prediction"], r["answers"], rgb) for r in cut)
    return {"trimmed": len(cut), "trimmed_unanswerable_answered": sum(r["unanswerable"] and not r["refused"]
                                                                      for r in cut), "trimmed_right": right}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.jsonl files of `rag eval` runs")
    parser.add_argument("--rgb", action="store_true", help="score by RGB's rule (the runs are RGB runs)")
    parser.add_argument("--recheck", metavar="CORPUS", help="re-check the focus refusals with today's rule over "
                        "the run's corpus folder (`default`: the project's)")
    args = parser.parse_args()
    for path in args.results:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rechecked = {}
        if args.recheck:
            rechecked = {"passed_on_recheck": recheck(rows, None if args.recheck == "default" else Path(args.recheck))}
        print(json.dumps({"run": str(path), **rechecked, "with_focus_check": outcomes(rows, args.rgb, True),
                          "without_focus_check": outcomes(rows, args.rgb, False),
                          "focus_refused": sum(r["refusal_reason"] == "focus" for r in rows),
                          **trimmed(rows, args.rgb)}, indent=2))


if __name__ == "__main__":
    main()
