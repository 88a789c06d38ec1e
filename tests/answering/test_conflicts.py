"""Saying that articles disagree (rag/answering/conflicts.py): the values an answer gives, and the sentence and
groups made from two reports. The generator's part is tested in test_dated_news.py."""

import pytest

from rag.answering.conflicts import _conflict, _grounded, agree, focus_values, states_it
from rag.dates import TimeScope
from rag.types import Passage

pytestmark = pytest.mark.unit


def passage(doc_id: str, text: str, published: str = "", outlet: str = "") -> Passage:
    return Passage(0, doc_id, doc_id.title(), text, 0, len(text), (1, 1), published=published, outlet=outlet)


@pytest.mark.parametrize(("text", "question", "values"), [
    ("Repairs will cost $8.2 million [1].", "How much will the repairs cost?", {"8.2"}),
    ("Super Bowl 2021 was held in Tampa, Florida [2].", "Super Bowl 2021 location", {"tampa", "florida"}),
    ("The Articles say it was in March [1].", "When was it?", {"march"}),
    ("It was 2021 [1].", "What happened in 2021?", set()),  # the question's own figure is no answer
])
def test_focus_values_are_the_figures_and_names_the_question_does_not_give(text, question, values):
    assert focus_values(text, question) == values


def test_a_reply_counts_only_when_its_values_are_in_its_passage():
    wire = passage("wire.txt", "Repairs to the Harbor Bridge will cost $9.5 million, a council document says.")
    question = "How much will the repairs cost?"
    assert _grounded("$9.5 million", wire, question) == "$9.5 million"
    assert _grounded("$8.2 million", wire, question) == ""  # not what this passage says
    assert _grounded("none", wire, question) == "" and _grounded("", wire, question) == ""
    assert _grounded("x" * 200 + " 9.5", wire, question) == ""  # a sentence, not a value


def test_the_sentence_names_each_report_with_its_marker_and_date():
    ledger = passage("ledger.md", "The repairs will cost $8.2 million.", "2024-05-02", "Coastal Ledger")
    wire = passage("wire.txt", "The repairs will cost $9.5 million.", "2024-05-03", "Metro Wire")
    found = _conflict(("$8.2 million", 1, ledger), ("$9.5 million", 2, wire), "How much?", None)
    assert found.sentence == ("The articles disagree: $8.2 million [1] (2024-05-02, Coastal Ledger); "
                              "$9.5 million [2] (2024-05-03, Metro Wire).")
    assert [g["markers"] for g in found.groups] == [[1], [2]]
    assert found.groups[1]["sources"][0] == {"doc_id": "wire.txt", "title": "Wire.Txt", "published": "2024-05-03",
                                             "outlet": "Metro Wire"}
    assert [c.marker for c in found.citations] == [2] and "9.5 million" in found.citations[0].span_text
    assert not found.replace_answer


def test_for_the_latest_the_newest_report_leads_and_replaces_an_older_answer():
    old = passage("march.md", "The forecast is $452 million.", "2024-03-15")
    new = passage("april.md", "The forecast is $468 million.", "2024-04-16")
    found = _conflict(("$452 million", 1, old), ("$468 million", 2, new), "latest?", TimeScope(latest=True))
    assert found.sentence == ("The newest report gives $468 million [2] (2024-04-16); an earlier one gave "
                              "$452 million [1] (2024-03-15).")
    assert found.replace_answer
    undated = passage("x.txt", "It is $1 million.")
    plain = _conflict(("$452 million", 1, old), ("$1 million", 2, undated), "latest?", TimeScope(latest=True))
    assert plain.sentence.startswith("The articles disagree:") and "$1 million [2]." in plain.sentence


@pytest.mark.parametrize(("one", "other", "same"), [
    ({"june", "19", "2020"}, {"6", "19", "2020"}, True),  # the same day written two ways
    ({"june", "19", "2020"}, {"june", "9", "2010"}, False),  # a shared month is not a shared date
    ({"8.2"}, {"9.5"}, False),
    ({"tim", "buckley"}, {"buckley"}, True),
    ({"tampa", "florida"}, {"glendale", "arizona"}, False),
])
def test_values_agree_by_their_figures_else_by_their_names(one, other, same):
    assert agree(one, other) is same


def test_a_value_counts_only_from_a_sentence_that_answers_the_question_itself():
    final = passage("final.txt", "France won the 2018 World Cup in Moscow. Croatia were the runners-up of the "
                                 "2018 World Cup after a 4-2 defeat.")
    question = "Who was the runner-up of the 2018 World Cup?"
    assert states_it(question, "Croatia", final)
    assert not states_it(question, "Spain", passage("other.txt", "Spain won the 2010 World Cup in Johannesburg."))
    level = passage("april.txt", "The Lake Orman reservoir stood at 49 percent of capacity, the board said.")
    assert states_it("What is the most recent reported level of the Lake Orman reservoir?", "49 percent", level)


def test_a_year_the_question_names_must_be_in_both_sentences():
    question = "Who is the CEO of Google in 2021?"
    assert states_it(question, "Sundar Pichai", passage("a.txt", "Sundar Pichai is the CEO of Google in 2021."))
    assert not states_it(question, "Eric Schmidt", passage("b.txt", "Eric Schmidt was the CEO of Google until 2011."))
