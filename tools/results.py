"""Bench results: a row measured side by side, and the results file (bench/*.json) rows are replaced in."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.files import write_text_atomically

RESULTS = Path("bench") / "results.json"


@dataclass
class Row:
    name: str
    value: float
    baseline: float | None  # the same thing measured the baseline way, in this run
    target: str  # "<= 0.15", ">= 0.95", or "" for a row that is only reported
    unit: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return round(self.value / self.baseline, 3) if self.baseline else None

    @property
    def meets(self) -> bool | None:
        if not self.target:
            return None
        op, bound = self.target.split()
        measured = self.ratio if self.baseline is not None else self.value
        return measured <= float(bound) if op == "<=" else measured >= float(bound)

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "meets": self.meets}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def replace_rows(path: Path, rows: list[Row]) -> None:
    """Put `rows` into a results file in place of the rows of the same name (each row is side by side in itself)."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"rows": []}
    fresh = {row.name: row.to_dict() for row in rows}
    kept = [fresh.pop(row["name"], row) for row in data["rows"]]
    data["rows"] = kept + list(fresh.values())
    write_text_atomically(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"\nrows replaced in {path}")


def print_table(rows: list[Row]) -> None:
    print("| measure | value | baseline | ratio | target | meets |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        baseline = "" if row.baseline is None else f"{row.baseline:g} {row.unit}"
        ratio = "" if row.ratio is None else f"{row.ratio:.3f}"
        meets = {True: "yes", False: "NO", None: ""}[row.meets]
        print(f"| {row.name} | {row.value:g} {row.unit} | {baseline} | {ratio} | {row.target} | {meets} |")
    for row in rows:
        if row.note:
            print(f"- {row.name}: {row.note}")
