"""Evaluation: the project's question set and the RGB benchmark, scored with SQuAD and RGB rules, with reports."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rag.answer import NOT_IN_ARTICLES, Answer, answer, is_refusal
from rag.citations import closest_sentence, is_bare_label
from rag.errors import BadInput
from rag.retrieval import Passage, get_retriever
from rag.settings import Settings
from rag.text import split_sentences, strip_markers, words_kept

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
             "unsupported_rate", "partial_answer_rate")
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


# ---------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation (ASCII and Unicode), no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold."""
    plain = normalize_answer(prediction)
    return max((float(plain == normalize_answer(g)) for g in golds), default=0.0)


def f1(prediction: str, golds: Iterable[str]) -> float:
    """SQuAD token F1, the best over the golds."""
    return max((_token_f1(prediction, g) for g in golds), default=0.0)


def _token_f1(prediction: str, gold: str) -> float:
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, golds: Iterable[str]) -> bool:
    """The answer-accuracy criterion: some normalised gold occurs in the normalised prediction."""
    plain = normalize_answer(prediction)
    return any(gold and gold in plain for gold in map(normalize_answer, golds))


def rgb_correct(reply: str, gold: str | list) -> bool:
    """RGB's rule: every item occurs in the lower-cased reply; an item that is a list is alternatives (any)."""
    reply = reply.lower()
    items = gold if isinstance(gold, list) else [gold]
    return all(any(alt.lower() in reply for alt in (item if isinstance(item, list) else [item])) for item in items)


def detect_refusal(text: str, refused: bool = False, refusal_text: str = "") -> bool:
    """Whether a reply declines: the pipeline's flag or a refusal in the words."""
    return refused or is_refusal(text, refusal_text)


def answer_found(text: str, question: Question) -> bool:
    """Whether the text holds the question's gold answer, by the rule of its set (project or RGB)."""
    if question.rgb_answer is not None:
        return rgb_correct(text, question.rgb_answer)
    return contains_answer(text, question.answers)


def passage_relevant(passage: Passage, question: Question) -> bool:
    """A passage is relevant when it holds a gold answer or covers the question's evidence."""
    return answer_found(passage.text, question) or any(_covers(passage, e) for e in question.evidence)


def _covers(passage: Passage, evidence: str) -> bool:
    paragraph = _PARAGRAPH_ID.match(evidence.strip())
    if paragraph:
        first, last = passage.paragraphs
        return first <= int(paragraph.group(1)) <= last
    return normalize_answer(evidence) in normalize_answer(passage.text)


def first_relevant_rank(passages: list[Passage], question: Question) -> int | None:
    return next((rank for rank, p in enumerate(passages, start=1) if passage_relevant(p, question)), None)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


# ---------------------------------------------------------------- one question's result


@dataclass
class Result:
    question: Question
    answer: Answer
    refused: bool
    top5: list[Passage]  # a separate retrieval at depth 5, for hit@1/3/5

    @property
    def prediction(self) -> str:
        return "" if self.refused else strip_markers(self.answer.text)

    @property
    def found(self) -> bool:
        return not self.refused and answer_found(self.prediction, self.question)

    @property
    def correct(self) -> bool:
        return self.refused if self.question.unanswerable else self.found

    @property
    def refused_right(self) -> bool | None:
        """For an answerable question that was refused: whether the generator's reply held the gold answer (a right
        reply refused, the costly false refusal; False for a wrong reply refused, or a refusal before any reply).
        None otherwise."""
        if self.question.unanswerable or not self.refused:
            return None
        return answer_found(strip_markers(self.answer.raw_text or ""), self.question)

    @property
    def rank(self) -> int | None:
        return first_relevant_rank(self.answer.passages, self.question)

    @property
    def rank_at_5(self) -> int | None:
        return first_relevant_rank(self.top5, self.question)

    @property
    def words_kept(self) -> bool | None:
        """Whether the checked answer keeps the reply's words (None for refusals and extractive answers)."""
        if self.refused or is_bare_label(self.answer.raw_text):
            return None
        kept = " ".join(s for s in split_sentences(self.answer.text) if not s.startswith(NOT_IN_ARTICLES[:20]))
        return words_kept(self.answer.raw_text, kept)  # a partial answer's own note on the missing part aside

    @property
    def closest_gold(self) -> bool | None:
        """For an answerable question that was refused: whether the "closest in the articles" sentence shown with
        the refusal holds the gold answer (None otherwise)."""
        if self.question.unanswerable or not self.refused or self.answer.refusal_reason == "instruction":
            return None
        return bool(self.answer.closest) and answer_found(self.answer.closest.span_text, self.question)

    @property
    def closest_if_refused_gold(self) -> bool | None:
        """For an answerable question: whether the closest sentence a refusal would show holds the gold answer (the
        one shown, where it was refused). The closest-sentence rule measured over every answerable question, not
        only over the few the decision refuses (None for unanswerable questions and refused instructions)."""
        if self.question.unanswerable or self.answer.refusal_reason == "instruction":
            return None
        closest = self.answer.closest if self.refused else closest_sentence(
            self.answer.rewritten_question or self.question.question, self.answer.passages, self.answer.raw_text)
        return closest is not None and answer_found(closest.span_text, self.question)

    @property
    def cited_gold(self) -> bool | None:
        """Whether the cited passages hold a gold answer (None when nothing is cited or it was refused)."""
        if self.refused or not self.answer.citations:
            return None
        return answer_found("\n".join(c.passage for c in self.answer.citations), self.question)

    @property
    def first_source_gold(self) -> bool | None:
        """For an answerable question: whether the first source shown with the answer holds a gold answer. The page
        lists the cited passages first (the lowest marker first), a refusal shows its closest sentence, and
        otherwise the retrieved passages come in their ranked order: so where the generator cites, its reading of
        the passages is a second ranking stage (None for unanswerable questions)."""
        if self.question.unanswerable:
            return None
        first = min(self.answer.citations, key=lambda c: c.marker, default=None) or self.answer.closest
        if first is not None:
            return answer_found(first.passage, self.question)
        return bool(self.answer.passages) and passage_relevant(self.answer.passages[0], self.question)

    def to_json(self) -> dict[str, Any]:
        golds = self.question.rgb_answer if self.question.rgb_answer is not None else self.question.answers
        return {
            "id": self.question.id, "question": self.question.question, "answers": golds,
            "unanswerable": self.question.unanswerable, "prediction": self.answer.text,
            "raw_text": self.answer.raw_text, "refused": self.refused, "refusal_reason": self.answer.refusal_reason,
            "second_look": self.answer.second_look, "correct": self.correct,
            "exact_match": exact_match(self.prediction, self.question.answers),
            "f1": round(f1(self.prediction, self.question.answers), 4),
            "citations": [{"marker": c.marker, "chunk_id": c.chunk_id} for c in self.answer.citations],
            "cited_gold": self.cited_gold, "unsupported": self.answer.unsupported,
            "retrieved": [p.chunk_id for p in self.answer.passages], "relevant_rank": self.rank,
            "retrieved_at_5": [p.chunk_id for p in self.top5], "relevant_rank_at_5": self.rank_at_5,
            "partial": self.answer.partial, "verdict": self.answer.verdict,
            "closest": self.answer.closest.span_text if self.answer.closest else None,
            "closest_gold": self.closest_gold, "closest_if_refused_gold": self.closest_if_refused_gold,
            "refused_right": self.refused_right,
            "first_source_gold": self.first_source_gold,
            "words_kept": self.words_kept, "latency": self.answer.timings, "usage": self.answer.usage,
        }


# ---------------------------------------------------------------- the evaluator


class QAEvaluator:
    """Runs every question through `rag.answer.answer` and scores the answers (sentence-transformers style).

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


# ---------------------------------------------------------------- outputs


def write_outputs(out_dir: Path, results: list[Result], metrics: Metrics, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.jsonl", "w", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(render_report(results, metrics, name), encoding="utf-8")
    plot_metrics(results, metrics, out_dir / "metrics.png", name)


def format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(metrics: Metrics) -> list[str]:
    return ["| metric | value |", "| --- | --- |"] + [f"| {k} | {format_value(v)} |" for k, v in metrics.items()]


def render_report(results: list[Result], metrics: Metrics, name: str) -> str:
    wrong = [r for r in results if not r.correct]
    lines = [f"# Evaluation: {name}", "", f"{metrics['questions']} questions ({metrics['answerable']} answerable, "
             f"{metrics['unanswerable']} unanswerable); generator {metrics['generator']}, embedder "
             f"{metrics['embedder']}, k={metrics['k']}.", "", *metrics_table(metrics), "",
             f"## Wrong answers ({len(wrong)})", ""]
    lines += [_wrong_line(r) for r in wrong] or ["None."]
    return "\n".join(lines) + "\n"


def _wrong_line(result: Result) -> str:
    q = result.question
    expected = "a refusal" if q.unanswerable else " / ".join(f"“{g}”" for g in q.answers)
    got = f"refused ({result.answer.refusal_reason or 'refusal wording'})" if result.refused else \
        f"“{result.answer.text}”"
    return f"- **{q.id}** {q.question} — expected {expected}; got {got}"


def plot_metrics(results: list[Result], metrics: Metrics, path: Path, name: str) -> None:
    """One figure: the rate metrics as bars, and the latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = {k: metrics[k] for k in RATE_KEYS if metrics.get(k) is not None}
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    bars.barh(list(rates)[::-1], list(rates.values())[::-1], color="#4c72b0")
    bars.set_xlim(0, 1)
    bars.set_title(f"{name}: rates ({metrics['questions']} questions)")
    for y, value in enumerate(list(rates.values())[::-1]):
        inside = value > 0.85
        bars.text(value - 0.01 if inside else value + 0.01, y, f"{value:.2f}", va="center", fontsize=8,
                  ha="right" if inside else "left", color="white" if inside else "black")
    totals = [r.answer.timings.get("total_s", 0.0) for r in results]
    ttfts = [r.answer.timings["ttft_s"] for r in results if r.answer.timings.get("ttft_s")]
    hist.hist(totals, bins=20, alpha=0.7, label="total")
    if ttfts:
        hist.hist(ttfts, bins=20, alpha=0.7, label="time to first token")
    hist.set_xlabel("seconds")
    hist.set_ylabel("questions")
    hist.set_title("latency")
    hist.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- RGB


def load_rgb(path: Path) -> list[dict[str, Any]]:
    """The rows of RGB's en_fact.json (a file, or a folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RGB_FILE
    if not path.is_file():
        raise EvaluationError(f"RGB data not found at {path}: pass --benchmark-path FILE_OR_FOLDER")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not {"query", "answer"} <= set(row):
                raise EvaluationError(f"{path}, line {number}: expected an object with `query` and `answer`")
            rows.append(row)
    if not rows:
        raise EvaluationError(f"{path}: no queries in the file")
    return rows


def rgb_questions(rows: list[dict[str, Any]]) -> list[Question]:
    return [Question(str(row.get("id", n)), str(row["query"]), _flatten(row["answer"]), rgb_answer=row["answer"])
            for n, row in enumerate(rows)]


def _flatten(gold: Any) -> list[str]:
    return [s for item in gold for s in _flatten(item)] if isinstance(gold, list) else [str(gold)]


def rgb_snippets(rows: list[dict[str, Any]]) -> list[str]:
    """Every distinct `positive` and `negative` snippet of all queries, in an order that tells nothing."""
    pooled = {s.strip() for row in rows for s in row.get("positive", []) + row.get("negative", []) if s.strip()}
    return sorted(pooled, key=lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


def write_rgb_corpus(snippets: list[str], folder: Path) -> None:
    """One .txt article per snippet under a neutral title ("RGB snippet 0042"); stale files are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"snippet-{n:04d}.txt": f"RGB snippet {n:04d}\n{text}\n" for n, text in enumerate(snippets)}
    for stale in folder.glob("*.txt"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        target = folder / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            partial = folder / f".{name}.partial"
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, target)


def prepare_rgb(path: Path, settings: Settings, positions: str | None = None, reject: str | None = None,
                ) -> tuple[list[Question], Path, str]:
    """RGB's questions (those at `positions`, default all), the folder of their pooled corpus (indexed, in its own
    index folder) and a line about it.

    With `reject` ("alternate": every second selected query, starting with the first; "all": every one), the
    negative-rejection condition: the corpus loses the `positive` snippets of the rejected queries and any other
    snippet that holds their answer, so only on-topic negatives remain for them and the right reply is a refusal
    (they become unanswerable); the other queries keep everything and must be answered."""
    from rag.index import build_index, index_folder

    rows = load_rgb(path)
    questions = rgb_questions(rows)
    chosen = parse_positions(positions, len(rows)) if positions else list(range(len(rows)))
    rejected = reject_positions(chosen, reject) if reject else []
    snippets, removed = rgb_snippets(rows), 0
    if rejected:
        kept = [s for s in snippets if not any(holds_rejected(s, rows[n]) for n in rejected)]
        snippets, removed = kept, len(snippets) - len(kept)
        for n in rejected:
            questions[n].unanswerable, questions[n].extra["condition"] = True, "rejection"
    tag = hashlib.sha1(",".join(map(str, rejected)).encode()).hexdigest()[:10]
    name = f"reject-{tag}" if rejected else "corpus"
    folder = settings.cache_dir / "benchmarks" / "rgb" / name
    write_rgb_corpus(snippets, folder)
    report = build_index([folder], index_folder(settings, folder), settings)
    pooled = sum(len(row.get("positive", [])) + len(row.get("negative", [])) for row in rows)
    note = (f"RGB corpus: {pooled} snippets pooled, {len(snippets)} distinct, {report.chunks} passages indexed "
            f"from {folder}")
    if rejected:
        note += (f"; negative rejection: {len(rejected)} of {len(chosen)} queries lose their {removed} answering "
                 "snippets and must be refused")
    return [questions[n] for n in chosen], folder, note


def reject_positions(chosen: list[int], reject: str) -> list[int]:
    """The positions whose answers are taken out: every second of `chosen` ("alternate") or all of them."""
    if reject not in REJECT_MODES:
        raise EvaluationError(f"--reject: expected one of {', '.join(REJECT_MODES)}, got {reject!r}")
    return list(chosen) if reject == "all" else chosen[::2]


def holds_rejected(snippet: str, row: dict[str, Any]) -> bool:
    """Whether a snippet must go for a query under rejection: one of its positives, or one holding its answer."""
    return snippet.strip() in {p.strip() for p in row.get("positive", [])} or rgb_correct(snippet, row["answer"])


# ---------------------------------------------------------------- command line


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """`rag eval`: run the evaluation, write the outputs, print the summary."""
    name = args.benchmark or "project"
    if args.benchmark and args.split not in (None, "all"):
        raise EvaluationError("--split selects from the project's question set, not from a benchmark")
    reject = getattr(args, "reject", None)
    if reject and args.benchmark != "rgb":
        raise EvaluationError("--reject is a condition of --benchmark rgb")
    if args.benchmark == "rgb":
        if args.corpus:
            raise EvaluationError("--corpus cannot be combined with --benchmark rgb (it brings its own corpus)")
        questions, corpus, note = prepare_rgb(args.benchmark_path or DEFAULT_RGB_PATH, settings,
                                              getattr(args, "queries", None), reject)
        name += "-reject" if reject else ""
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


def _retrieval_only(questions: list[Question], settings: Settings, corpus: Path | None, out_dir: Path) -> int:
    """hit@1/3/5 and MRR@5 for hybrid, dense-only and BM25-only retrieval, and the best-passage similarity
    ranges (no generator), into retrieval.json."""
    variants = {"hybrid": settings, "dense": settings.replace(bm25=False), "bm25": settings.replace(dense=False)}
    table = {label: retrieval_metrics(questions, s, corpus) for label, s in variants.items()}
    table["best_relevance"] = relevance_ranges(questions, settings, corpus)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "retrieval.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
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


__all__ = [
    "EvaluationError", "QAEvaluator", "Question", "Result", "answer_found", "compute_metrics", "contains_answer",
    "detect_refusal", "exact_match", "f1", "load_questions", "load_rgb", "normalize_answer", "passage_relevant",
    "relevance_ranges", "retrieval_metrics", "rgb_correct", "run_cli", "select_split",
]
