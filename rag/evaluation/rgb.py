"""The RGB benchmark: its questions, its snippet corpus, the negative-rejection condition."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rag.evaluation.metrics import rgb_correct
from rag.evaluation.questions import REJECT_MODES, RGB_FILE, EvaluationError, Question, parse_positions
from rag.files import remove_stale_partials, write_text_atomically
from rag.settings import Settings

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
    remove_stale_partials(folder)
    wanted = {f"snippet-{n:04d}.txt": f"RGB snippet {n:04d}\n{text}\n" for n, text in enumerate(snippets)}
    for stale in folder.glob("*.txt"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        target = folder / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            write_text_atomically(target, text, fsync=False)  # not synced, as before: rewritten when it differs


def prepare_rgb(path: Path, settings: Settings, positions: str | None = None, reject: str | None = None,
                ) -> tuple[list[Question], Path, str]:
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
