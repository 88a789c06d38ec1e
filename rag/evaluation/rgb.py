"""The RGB benchmark: its questions, its snippet corpus, and its conditions: negative rejection, conflicting reports
(half a query's positives replaced by their counterfactual twins), counterfactual only, and wire copies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rag.evaluation.metrics import rgb_correct
from rag.evaluation.questions import REJECT_MODES, RGB_FILE, EvaluationError, Question, parse_positions
from rag.files import remove_stale_partials, write_text_atomically
from rag.settings import Settings

CONDITIONS = ("conflict", "counterfactual")
# Small edits a reprint makes: a credit line, a word changed, a tag. Copy k of a snippet gets edit k (k <= 3).
COPY_EDITS = (lambda s: f"{s} (Wire)", lambda s: "UPDATE: " + s.replace(" and ", " & ", 1),
              lambda s: s.replace(" said ", " stated ", 1) + " Reporting by staff.")

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
    return [Question(str(row.get("id", n)), str(row["query"]), _flatten(row["answer"]), rgb_answer=row["answer"],
                     extra={"fake": row["fakeanswer"]} if row.get("fakeanswer") else {})
            for n, row in enumerate(rows)]


def _flatten(gold: Any) -> list[str]:
    return [s for item in gold for s in _flatten(item)] if isinstance(gold, list) else [str(gold)]


def rgb_snippets(rows: list[dict[str, Any]]) -> list[str]:
    """Every distinct `positive` and `negative` snippet of all queries, in an order that tells nothing."""
    pooled = {s.strip() for row in rows for s in row.get("positive", []) + row.get("negative", []) if s.strip()}
    return sorted(pooled, key=lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


def write_rgb_corpus(snippets: list[str], folder: Path, copies: int = 0) -> None:
    """One .txt article per snippet under a neutral title ("RGB snippet 0042"), with `copies` edited reprints of
    each (snippet-0042-copy1.txt, ...); stale files are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)
    wanted = {f"snippet-{n:04d}.txt": f"RGB snippet {n:04d}\n{text}\n" for n, text in enumerate(snippets)}
    for n, text in enumerate(snippets):
        for copy, edit in enumerate(COPY_EDITS[:copies], start=1):
            wanted[f"snippet-{n:04d}-copy{copy}.txt"] = f"RGB snippet {n:04d}\n{edit(text)}\n"
    for stale in folder.glob("*.txt"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        target = folder / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            write_text_atomically(target, text, fsync=False)  # not synced, as before: rewritten when it differs


def prepare_rgb(path: Path, settings: Settings, positions: str | None = None, reject: str | None = None,
                condition: str | None = None, copies: int = 0) -> tuple[list[Question], Path, str]:
    """RGB's questions (those at `positions`, default all), the folder of their pooled corpus (indexed, in its own
    index folder) and a line about it.

    With `reject` ("alternate": every second selected query, starting with the first; "all": every one), the
    negative-rejection condition: the corpus loses the `positive` snippets of the rejected queries and any other
    snippet that holds their answer, so only on-topic negatives remain for them and the right reply is a refusal
    (they become unanswerable); the other queries keep everything and must be answered."""
    from rag.indexing.build import build_index, index_folder

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
    if condition:
        snippets = _with_twins(snippets, rows, chosen, condition, questions)
    tag = hashlib.sha1(f"{rejected}{condition}{chosen if condition else ''}".encode()).hexdigest()[:10]
    name = f"reject-{tag}" if rejected else f"{condition}-{tag}" if condition else "corpus"
    name += f"-copies{copies}" if copies else ""
    folder = settings.cache_dir / "benchmarks" / "rgb" / name
    write_rgb_corpus(snippets, folder, copies)
    report = build_index([folder], index_folder(settings, folder), settings)
    pooled = sum(len(row.get("positive", [])) + len(row.get("negative", [])) for row in rows)
    note = (f"RGB corpus: {pooled} snippets pooled, {len(snippets)} distinct, {report.chunks} passages indexed "
            f"from {folder}")
    if rejected:
        note += (f"; negative rejection: {len(rejected)} of {len(chosen)} queries lose their {removed} answering "
                 "snippets and must be refused")
    if condition:
        marked = sum(questions[n].extra.get("condition") == condition for n in chosen)
        note += f"; {condition}: {marked} of {len(chosen)} queries have twins in the pool"
    if copies:
        note += f"; {copies} edited copies of every snippet"
    return [questions[n] for n in chosen], folder, note


def _with_twins(snippets: list[str], rows: list[dict[str, Any]], chosen: list[int], condition: str,
                questions: list[Question]) -> list[str]:
    """The pool with the chosen queries' positives replaced by their counterfactual twins (every second one for
    "conflict", all for "counterfactual"); the queries so changed are marked with the condition."""
    if condition not in CONDITIONS:
        raise EvaluationError(f"unknown RGB condition {condition!r}: use one of {', '.join(CONDITIONS)}")
    removed, added = set(), []
    for n in chosen:
        positives, twins = rows[n].get("positive", []), rows[n].get("positive_wrong", [])
        if len(twins) != len(positives) or (condition == "conflict" and len(positives) < 2):
            continue
        replaced = range(1, len(positives), 2) if condition == "conflict" else range(len(positives))
        removed.update(positives[i].strip() for i in replaced)
        added += [twins[i].strip() for i in replaced]
        questions[n].extra["condition"] = condition
    pooled = [s for s in snippets if s not in removed] + [s for s in dict.fromkeys(added) if s not in snippets]
    return sorted(pooled, key=lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


def reject_positions(chosen: list[int], reject: str) -> list[int]:
    """The positions whose answers are taken out: every second of `chosen` ("alternate") or all of them."""
    if reject not in REJECT_MODES:
        raise EvaluationError(f"--reject: expected one of {', '.join(REJECT_MODES)}, got {reject!r}")
    return list(chosen) if reject == "all" else chosen[::2]


def holds_rejected(snippet: str, row: dict[str, Any]) -> bool:
    """Whether a snippet must go for a query under rejection: one of its positives, or one holding its answer."""
    return snippet.strip() in {p.strip() for p in row.get("positive", [])} or rgb_correct(snippet, row["answer"])
