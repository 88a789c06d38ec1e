"""Dated news on the real models: the newest figure for "latest", a month's figure for "in <month year>", the
requested date range, two articles that disagree said to disagree, and undated articles read as before.

The corpora are tests/data/dated/ (synthetic: every place, company and figure is invented)."""

import json
import shutil
from pathlib import Path

import pytest

from rag.answering.flow import answer, stream_answer
from rag.dates import DateError
from rag.types import Answer
from tests.conftest import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]
DATED = Path(__file__).resolve().parents[1] / "data" / "dated"


def corpus_settings(tmp: Path, name: str):
    shutil.copytree(DATED / name, tmp / "corpus")
    return make_settings(tmp, as_of="2024-06-01")


@pytest.fixture(scope="module")
def revisions(tmp_path_factory):
    return corpus_settings(tmp_path_factory.mktemp("revisions"), "revisions")


@pytest.fixture(scope="module")
def disagree(tmp_path_factory):
    return corpus_settings(tmp_path_factory.mktemp("disagree"), "disagree")


def gives(text: str, row: dict) -> bool:
    """Whether an answer gives the row's figure (its first form is the one the articles write)."""
    return any(answer in text for answer in row["answers"])


def questions(kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (DATED / "questions.jsonl").read_text().splitlines()]
    return [row for row in rows if row["type"] == kind]


@pytest.mark.parametrize("row", questions("latest"), ids=lambda row: row["id"])
def test_latest_is_answered_with_the_newest_figure(revisions, row):
    result = answer(row["question"], settings=revisions)
    assert not result.refused, result.to_dict()
    assert gives(result.text, row), result.text
    assert result.dates["latest"]
    assert result.passages[0].published.startswith("2024-04")  # the newest report first
    newest = next(c for c in result.citations if row["answers"][0] in c.passage)
    assert newest.published.startswith("2024-04")


@pytest.mark.parametrize("row", [r for r in questions("in-month") if r["id"].endswith(("-02", "-03"))],
                         ids=lambda row: row["id"])
def test_in_month_is_answered_with_that_months_figure(revisions, row):
    result = answer(row["question"], settings=revisions)
    month = row["id"][-7:]  # 2024-02
    assert not result.refused, result.to_dict()
    assert gives(result.text, row), result.text
    assert result.dates["applied"] and result.dates["since"] == f"{month}-01"
    assert {p.published[:7] for p in result.passages} == {month}


def test_sources_carry_their_date_and_outlet(revisions):
    result = answer("What is the current unemployment rate in Hollis County?", settings=revisions)
    assert all(p.published for p in result.passages)
    assert {p.outlet for p in result.passages if p.doc_id.startswith("hollis")} == {"Hollis County Record"}
    assert all(c.published and c.outlet for c in result.citations)


def test_two_articles_that_disagree_are_both_named_with_citations_and_dates(disagree):
    events = list(stream_answer("How much will the Harbor Bridge repairs in Norrport cost?", settings=disagree))
    final = events[-1]
    assert isinstance(final, Answer) and not final.refused, final.to_dict()
    assert final.conflict, final.to_dict()
    values = " ".join(group["value"] for group in final.conflict_groups)
    assert "8.2 million" in values and "9.5 million" in values
    assert "8.2 million" in final.text and "9.5 million" in final.text and "disagree" in final.text
    assert "2024-05-02" in final.text and "2024-05-03" in final.text
    cited = {c.marker: c for c in final.citations}
    for group in final.conflict_groups:
        (marker,) = group["markers"]
        assert f"[{marker}]" in final.text and group["value"].split()[0].strip("$") in cited[marker].passage
    streamed = "".join(e for e in events if isinstance(e, str))
    assert "disagree" in streamed  # the sentence reaches streaming clients too


def test_requested_dates_limit_the_articles(disagree):
    result = answer("How much will the Harbor Bridge repairs in Norrport cost?", settings=disagree,
                    since="2024-05-03")
    assert {p.doc_id for p in result.passages} == {"wire-bridge.txt"}
    assert not result.conflict and "9.5 million" in result.text
    assert result.dates["source"] == "request" and result.dates["since"] == "2024-05-03"
    empty = answer("How much will the Harbor Bridge repairs cost?", settings=disagree, since="2025-01-01")
    assert empty.refused and empty.refusal_reason == "date-range"
    assert empty.text == "No article in the collection is dated on or after 2025-01-01."


def test_a_bad_date_is_refused_before_any_model_work(disagree):
    with pytest.raises(DateError, match="until"):
        answer("How much will the repairs cost?", settings=disagree, until="the day after tomorrow")
