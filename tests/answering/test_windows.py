"""Reading a passage's best-matching sentences instead of the whole passage (rag/answering/windows.py), on
hand-made passages: what the window keeps, that it stays within its budget, and that its offsets stay exact."""

import pytest

from rag.answering.windows import sentence_window
from rag.types import Passage

pytestmark = pytest.mark.unit

ARTICLE = (
    "Seoul hosted a technology fair on Monday. Thousands of visitors came to the exhibition halls. "
    "The science ministry said it will deploy 1.02 trillion won for AI chip research by 2027. "
    "The money will go to 16 research centres across the country. "
    "Officials also discussed the weather. Lunch was served at noon. The fair closes on Friday."
)


def words(text: str) -> int:
    return len(text.split())


def passage(text: str = ARTICLE, offset: int = 100) -> Passage:
    return Passage(1, "fair", "Tech fair", text, offset, offset + len(text), (0, 0))


def test_a_passage_within_the_budget_is_read_whole():
    whole = passage()
    assert sentence_window("How much for AI chips?", whole, budget=500, count_tokens=words) is whole


def test_the_window_holds_the_sentence_with_the_figure_and_the_one_after_it():
    window = sentence_window("How much will the ministry deploy for AI chip research?", passage(), 30, words)
    assert window.text.startswith("The science ministry said it will deploy 1.02 trillion won")
    assert "16 research centres" in window.text  # the sentence after comes before the one before
    assert "Lunch" not in window.text and words(window.text) <= 30


def test_the_window_keeps_the_article_offsets_exact():
    article = "x" * 100 + ARTICLE
    window = sentence_window("What did the ministry deploy by 2027?", passage(), 25, words)
    assert article[window.start:window.end] == window.text
    assert (window.chunk_id, window.doc_id, window.title) == (1, "fair", "Tech fair")


def test_a_sentence_longer_than_the_budget_is_still_read():
    window = sentence_window("How much will the ministry deploy by 2027?", passage(), 5, words)
    assert window.text == "The science ministry said it will deploy 1.02 trillion won for AI chip research by 2027."


def test_a_passage_no_sentence_of_which_matches_is_read_whole():
    whole = passage()
    assert sentence_window("Who scored in the football final?", whole, 20, words) is whole
