"""Trimming a detail no sentence states, and the question's focus the cited sentences must carry
(rag/answering/focus.py), on the seed article's own text. The generator's part is tested in test_answer_trimmed.py."""

from pathlib import Path

import pytest

from rag.answering.citations import check_citations
from rag.answering.focus import missing_focus, question_focus, trim_details
from rag.types import Passage

pytestmark = pytest.mark.unit

SEED = Path(__file__).resolve().parents[2] / "corpus" / "south-korea-ai-investment.txt"


@pytest.fixture(scope="module")
def article() -> list[Passage]:
    text = SEED.read_text(encoding="utf-8")
    return [Passage(1, "seed", "South Korea's AI investment", text, 0, len(text), (0, 1))]


def test_a_year_the_alliance_sentence_does_not_give_is_cut_and_the_rest_answered(article):
    reply = "The Korean government established the Metaverse Alliance in 2021 [1]."
    assert trim_details(reply, "Who founded the Metaverse Alliance?", article) == (
        "The Korean government established the Metaverse Alliance [1].", ["in 2021"])


@pytest.mark.parametrize(("question", "reply"), [
    # the figure is the answer and no sentence gives it: nothing is left to answer with, the checks refuse
    ("How many employees does Samsung Electronics have?", "Samsung Electronics has 10,000 employees [1]."),
    # one sentence states it all
    ("When did the government turn to the Metaverse?",
     "The South Korean government turned its attention to the Metaverse as early as 2021 [1]."),
])
def test_nothing_is_cut_when_no_short_detail_leaves_a_stated_answer(article, question, reply):
    assert trim_details(reply, question, article) == (reply, [])


def test_the_year_a_when_question_asks_for_is_never_cut(article):
    reply = "The Korean government established the Metaverse Alliance in 2021 [1]."
    assert trim_details(reply, "When was the Metaverse Alliance established?", article) == (reply, [])


def test_a_detail_set_off_by_commas_goes_with_both_commas(article):
    reply = "The Korean government, with 300 companies, established the Metaverse Alliance [1]."
    assert trim_details(reply, "Who founded the Metaverse Alliance?", article) == (
        "The Korean government established the Metaverse Alliance [1].", ["with 300 companies"])


@pytest.mark.parametrize(("question", "focus"), [
    ("How much will the government invest in AI semiconductors by 2027?", {"2027"}),
    ("Who founded the Metaverse Alliance?", {"metav", "allia"}),
    ("How much did SpaceX receive from NASA in 2019?", {"space", "nasa", "2019"}),
    ("What did he say?", set()),
])
def test_the_focus_is_the_questions_figures_years_and_names(question, focus):
    assert question_focus(question) == focus


def paragraph(article: list[Passage], opening: str, chunk_id: int = 1) -> Passage:
    """The seed article's paragraph that starts with `opening`, as one passage."""
    text = article[0].text
    start = text.index(opening)
    end = text.find("\n", start) % (len(text) + 1)
    return Passage(chunk_id, "seed", "South Korea's AI investment", text[start:end], start, end, (0, 1))


def test_a_true_passage_about_another_figure_does_not_answer_the_question(article):
    plan = [paragraph(article, "In recent years, the Korean government")]  # the 909 billion won, not the 2027 plan
    reply = "The government will invest 909 billion won in the field of daily AI for all people starting this year [1]."
    checked = check_citations(reply, plan, 0.5)
    assert checked.supported_sentences == 1  # true and cited ...
    question = "How much will the government invest in AI semiconductors by 2027?"
    assert missing_focus(question, checked, plan) == {"2027"}  # ... but about another figure
    chips = [paragraph(article, "At the same time, South Korea")]
    right = check_citations("The ministry will deploy 1.02 trillion won for AI semiconductors by 2027 [1].", chips, 0.5)
    assert missing_focus(question, right, chips) == set()


def test_a_sentence_leaning_on_the_one_before_it_carries_that_ones_names():
    text = ("The Veltrana X9 drone carries the product code X9-771 and ships in May. Its label reads "
            "'handle with care' in red letters.")
    drone = [Passage(1, "drone", "Drone codes", text, 0, len(text), (0, 1))]
    checked = check_citations("Its label reads 'handle with care' [1].", drone, 0.5)
    assert missing_focus("What does the label of the Veltrana X9 drone read?", checked, drone) == set()
    assert missing_focus("What does the label of the Veltrana X7 drone read?", checked, drone) == {"7"}


def test_the_sentence_before_may_sit_in_the_passage_before(article):
    meeting = paragraph(article, "According to information from the South Korean Presidential Office", 2)
    cut = meeting.text.index("During the 30-minute meeting")
    first = Passage(1, "seed", meeting.title, meeting.text[:cut], meeting.start, meeting.start + cut, (0, 1))
    second = Passage(2, "seed", meeting.title, meeting.text[cut:], meeting.start + cut, meeting.end, (1, 2))
    checked = check_citations("The meeting lasted 30 minutes [2].", [first, second], 0.5)
    question = "How long did the meeting with Zuckerberg last?"
    assert missing_focus(question, checked, [first, second]) == set()
    assert missing_focus(question, checked, [second]) == {"zucke"}  # the passage before unread


def test_every_figure_and_half_the_names_asked_about_must_be_read():
    text = "Toy Story 4 won Best Animated Feature at the Academy Awards ceremony on February 9, 2020."
    oscars = [Passage(1, "oscars", "RGB snippet", text, 0, len(text), (0, 1))]
    checked = check_citations("Toy Story 4 won Best Animated Feature [1].", oscars, 0.5)
    assert missing_focus("What movie won the Oscar for Best Animated Film in 2020?", checked, oscars) == set()
    assert missing_focus("What movie won the Oscar for Best Animated Film in 2021?", checked, oscars) == {"2021"}
    assert missing_focus("Which Pixar Film won the Oscar in 2020?", checked, oscars) == {"pixar", "film", "oscar"}


def test_the_questions_own_words_restated_are_never_cut_as_a_detail():
    text = "Joaquin Phoenix won Best Actor at the 92nd Academy Awards for his role in Joker."
    awards = [Passage(1, "oscars", "Oscars", text, 0, len(text), (0, 1))]
    reply = "Joaquin Phoenix won Best Actor at the 92nd Academy Awards Ceremony [1]."
    assert trim_details(reply, "Which actor won Best Actor at the 92nd Academy Awards Ceremony?", awards) == (reply, [])


@pytest.mark.parametrize(("question", "reply"), [
    # a phrase holding the question's own word goes with the question, not as a detail
    ("Who is the president of FIFA?", "Jeffrey Webb is the president of CONCACAF, a confederation under FIFA [1]."),
    # the date a "when" question asks for is never cut, even when a year would be left
    ("When was the Pixel 5a announced?", "The Pixel 5a was announced on August 26, 2021 [1]."),
])
def test_what_the_question_asks_for_is_never_cut(question, reply):
    text = "Jeffrey Webb leads CONCACAF. Google announced the Pixel 5a in 2021."
    snippets = [Passage(1, "rgb", "RGB snippet", text, 0, len(text), (0, 1))]
    assert trim_details(reply, question, snippets) == (reply, [])


def test_a_detail_phrase_goes_whole_with_its_unit(article):
    reply = "President Yoon met Zuckerberg for 45 minutes in Seoul [1]."
    assert trim_details(reply, "Who met Zuckerberg?", article) == (
        "President Yoon met Zuckerberg in Seoul [1].", ["for 45 minutes"])
