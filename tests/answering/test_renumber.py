"""Markers numbered as a reader meets them: [1], [2], … in order of first appearance, lists written as adjacent
markers, citations and conflict groups numbered alike (rag.answering.citations.renumber), on replies as the
checks leave them and on the sentence that says the articles disagree."""

import re

import pytest

from rag.answering.citations import check_citations, renumber
from rag.types import Citation, Passage

pytestmark = pytest.mark.unit

P1 = "The government will invest 909 billion won in daily AI for all people starting this year."
P2 = ("The ministry will deploy 1.02 trillion won for AI semiconductors by 2027. "
      "Minister Lee Jong-ho said the plan runs in phases.")
P3 = "Chip exports increased by 66.7% year-on-year in February."
LEDGER = "The Harbor Bridge repairs in Norrport will cost $8.2 million, the city council said on Thursday."
WIRE = "Repairs to the Harbor Bridge in Norrport are now expected to cost $9.5 million, officials said."


def passages(*texts: str) -> list[Passage]:
    out, offset = [], 0
    for i, text in enumerate(texts):
        out.append(Passage(i, "seed.txt", "Seed", text, offset, offset + len(text), (i + 1, i + 1), i + 1,
                           {"dense_similarity": 0.5}))
        offset += len(text) + 1
    return out


def cite(marker: int, passage: Passage, doc_id: str = "seed.txt") -> Citation:
    return Citation(marker, passage.chunk_id, doc_id, passage.title, passage.text, passage.start, passage.end,
                    passage.text, 0.5, 1.0)


def markers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


def test_a_checked_reply_is_numbered_in_order_of_first_appearance():
    found = passages(P1, P2, P3)
    reply = ("The ministry will deploy 1.02 trillion won for AI semiconductors by 2027 [2]. Chip exports increased "
             "by 66.7% in February [3]. The government will invest 909 billion won in daily AI for all people [1].")
    checked = check_citations(reply, found, 0.5)
    assert markers(checked.text) == [2, 3, 1]  # the checks number the passages as the prompt did
    text, citations, _ = renumber(checked.text, checked.citations)
    assert text == ("The ministry will deploy 1.02 trillion won for AI semiconductors by 2027 [1]. Chip exports "
                    "increased by 66.7% in February [2]. The government will invest 909 billion won in daily AI for "
                    "all people [3].")
    # each citation keeps its passage (by chunk), under the number the text now gives it, in that order
    assert [(c.marker, c.chunk_id) for c in citations] == [(1, 1), (2, 2), (3, 0)]
    assert all(c.span_text in found[c.chunk_id].text for c in citations)


def test_a_list_of_markers_becomes_adjacent_markers_whatever_separated_them():
    found = passages(P1, P2, P3)
    cited = [cite(1, found[0]), cite(2, found[1]), cite(3, found[2])]
    for written in ("[3], [1]", "[3] and [1]", "[3] [1]", "[3]; [1]", "[3, 1]", "[3][1]", "[1] [3]"):
        text, _, _ = renumber(f"Seoul will spend 1.02 trillion won on chips {written}.", cited)
        assert text == "Seoul will spend 1.02 trillion won on chips [1][2].", written
    text, citations, _ = renumber("Chip exports rose 66.7% [3], [2] and [1]. They rose in February [1].", cited)
    assert text == "Chip exports rose 66.7% [1][2][3]. They rose in February [3]."
    assert [c.chunk_id for c in citations] == [2, 1, 0]
    # a front-end that cannot link a marker and drops it leaves no stray separator
    assert ", " not in text.replace("[2]", "") and "[1][3]" in text.replace("[2]", "")


def test_a_marker_no_citation_backs_is_dropped_and_an_unnamed_citation_too():
    found = passages(P1, P2, P3)
    text, citations, _ = renumber("The plan runs in phases [4]. It costs 1.02 trillion won [2], [4].",
                                  [cite(1, found[0]), cite(2, found[1])])
    assert text == "The plan runs in phases. It costs 1.02 trillion won [1]."
    assert [(c.marker, c.chunk_id) for c in citations] == [(1, 1)]


def test_the_disagreement_sentence_and_its_groups_are_numbered_like_the_answer():
    ledger, wire = passages(LEDGER, WIRE)
    # as conflicts.py writes it after an answer that cited the wire report (passage [2] of the prompt)
    text = ("The repairs will cost $9.5 million [2]. The articles disagree: $9.5 million [2] (2024-05-03, Metro "
            "Wire); $8.2 million [1] (2024-05-02, Coastal Ledger).")
    groups = [{"value": "$9.5 million", "markers": [2], "sources": [{"doc_id": "wire-bridge.txt"}]},
              {"value": "$8.2 million", "markers": [1], "sources": [{"doc_id": "ledger-bridge.md"}]}]
    out, citations, regrouped = renumber(text, [cite(1, ledger, "ledger-bridge.md"), cite(2, wire, "wire-bridge.txt")],
                                         groups)
    assert out == ("The repairs will cost $9.5 million [1]. The articles disagree: $9.5 million [1] (2024-05-03, "
                   "Metro Wire); $8.2 million [2] (2024-05-02, Coastal Ledger).")
    assert [g["markers"] for g in regrouped] == [[1], [2]]
    assert [c.doc_id for c in citations] == ["wire-bridge.txt", "ledger-bridge.md"]
    assert regrouped[0]["value"] == "$9.5 million" and groups[0]["markers"] == [2]  # the input is left as it was


def test_a_text_without_markers_is_left_as_it_is():
    assert renumber("The articles do not say.", []) == ("The articles do not say.", [], [])
    assert renumber("Spending rose 5% in 2024 (from 3%).", [])[0] == "Spending rose 5% in 2024 (from 3%)."
