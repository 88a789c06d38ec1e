"""Question sets: loading and checking the project's questions, splits."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import BadInput

Metrics = dict[str, Any]  # metric name -> float (None where it does not apply), int counts or model names
DEFAULT_QUESTIONS = Path("eval") / "questions.jsonl"  # inside the corpus folder
DEFAULT_RGB_PATH = Path("..") / "shared" / "benchmarks" / "rgb" / "en_fact.json"
RGB_FILE = "en_fact.json"
RETRIEVAL_DEPTHS = (1, 3, 5)
REJECT_MODES = ("alternate", "all")
# The project set is split once by a rule written into the file: every third line has "split": "test".
SPLITS = ("tune", "test")
RATE_KEYS = ("answer_accuracy", "exact_match", "f1", "retrieval_hit_at_k", "mrr", "retrieval_hit_at_1",
             "retrieval_hit_at_3", "retrieval_hit_at_5", "mrr_at_5", "refusal_accuracy", "false_refusal_rate",
             "right_replies_refused", "citation_accuracy", "closest_holds_gold", "closest_if_refused",
             "unsupported_rate", "partial_answer_rate", "disagreement_rate", "both_named", "fake_answer_rate",
             "distinct_reports_at_5")
_PARAGRAPH_ID = re.compile(r"^p(\d+)$", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class EvaluationError(BadInput, ValueError):
    """A question set or benchmark file cannot be used; the message names the file (and line)."""


# ---------------------------------------------------------------- questions


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]  # acceptable answers: any one counts
    unanswerable: bool = False
    evidence: list[str] = field(default_factory=list)  # paragraph ids ("p10") or evidence text
    rgb_answer: Any = None  # RGB's gold (string or list; a nested list holds alternatives): scored RGB's way
    split: str = ""  # "tune" (prompts and thresholds are chosen on it) or "test" (reported, never tuned on)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept and ignored


def load_questions(path: Path) -> list[Question]:
    """Read a JSON-lines question set; EvaluationError names the file and line of any problem."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read the question file ({exc})") from exc
    questions = [_parse_question(line, path, number) for number, line in enumerate(lines, start=1) if line.strip()]
    if not questions:
        raise EvaluationError(f"{path}: no questions in the file")
    duplicates = [qid for qid, n in Counter(q.id for q in questions).items() if n > 1]
    if duplicates:
        raise EvaluationError(f"{path}: duplicate question id(s): {', '.join(duplicates)}")
    return questions


def _parse_question(line: str, path: Path, number: int) -> Question:
    where = f"{path}, line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in ("id", "question", "answers") if key not in data]
    if missing:
        raise EvaluationError(f"{where}: missing key(s): {', '.join(missing)}")
    question = data["question"]
    if not isinstance(question, str) or not question.strip():
        raise EvaluationError(f"{where}: `question` must be non-empty text")
    answers = _string_list(data["answers"], "answers", where)
    unanswerable = data.get("unanswerable") is True
    if not answers and not unanswerable:
        raise EvaluationError(f"{where}: an answerable question needs at least one answer "
                              "(or set \"unanswerable\": true)")
    evidence = _string_list(data.get("evidence") or [], "evidence", where)
    split = data.get("split", "")
    if split not in SPLITS + ("",):
        raise EvaluationError(f"{where}: `split` must be one of {', '.join(SPLITS)}, got {split!r}")
    known = {"id", "question", "answers", "unanswerable", "evidence", "split"}
    return Question(str(data["id"]), question.strip(), answers, unanswerable, evidence, split=split,
                    extra={k: v for k, v in data.items() if k not in known})


def select_split(questions: list[Question], split: str | None) -> list[Question]:
    """The questions of one split ("tune" or "test"); all of them for None or "all"."""
    if split in (None, "all"):
        return questions
    chosen = [q for q in questions if q.split == split]
    if not chosen:
        raise EvaluationError(f"no question of the set is in the {split!r} split")
    return chosen


def _string_list(value: Any, key: str, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise EvaluationError(f"{where}: `{key}` must be a string or a list of strings")
    return [item for item in items if item.strip()]


def select_positions(questions: list[Question], spec: str) -> list[Question]:
    """The questions at the 0-based positions of `spec` ("50-99", "3,10-12"), in their order in the file."""
    return [questions[n] for n in parse_positions(spec, len(questions))]


def parse_positions(spec: str, count: int) -> list[int]:
    """The sorted 0-based positions that `spec` names, each below `count`."""
    wanted: set[int] = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise EvaluationError(f"--queries: expected positions such as 50-99 or 3,10-12, got {spec!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise EvaluationError(f"--queries: the range {part.strip()} runs backwards")
        wanted.update(range(first, last + 1))
    if max(wanted) >= count:
        raise EvaluationError(f"--queries: position {max(wanted)} is past the last question ({count - 1})")
    return sorted(wanted)
