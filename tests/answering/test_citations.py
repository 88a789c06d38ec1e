"""Citation checking on hand-made replies: markers kept, fixed or added, supporting spans, filler dropped,
unsupported sentences flagged, and the closest sentence shown with a refusal."""

import pytest

from rag.answering.citations import (
    check_citations,
    claim_support,
    closest_sentence,
    is_bare_label,
    is_filler,
    names,
    normalise_markers,
    support,
    supporting_span,
)
from rag.text import split_sentences
from rag.types import Passage

pytestmark = pytest.mark.unit

P1 = "The government will invest 909 billion won in daily AI for all people starting this year."
P2 = ("The ministry will deploy 1.02 trillion won for AI semiconductors by 2027. "
      "Minister Lee Jong-ho said the plan runs in phases.")
P3 = "Chip exports increased by 66.7% year-on-year in February."


def passages() -> list[Passage]:
    out, offset = [], 100
    for i, text in enumerate([P1, P2, P3]):
        out.append(Passage(i, "seed.txt", "Seed", text, offset, offset + len(text), (i + 1, i + 1), i + 1,
                           {"dense_similarity": 0.5}))
        offset += len(text) + 1
    return out


def one_passage(doc: str, title: str, text: str) -> list[Passage]:
    return [Passage(0, doc, title, text, 0, len(text), (1, 1), 1, {"dense_similarity": 0.6})]


def test_the_closest_sentence_is_the_one_a_refused_reply_drew_on_even_with_a_figure_more():
    oscars = ("The Oscars 2020 Animated Feature Film nominations have been announced! "
              "Toy Story 4 won Best Animated Feature.")
    found = one_passage("oscars.txt", "Oscars", oscars)
    question = "What movie won the Oscar for Best Animated Film in 2020?"
    # A right reply with a date the passage lacks: `support` gives it 0 everywhere, its share of terms does not.
    reply = "Toy Story 4 won Best Animated Feature at the ceremony on February 9, 2020 [1]."
    assert closest_sentence(question, found, reply).span_text == "Toy Story 4 won Best Animated Feature."
    # Without a reply (or with one about something else) the sentence that supports the question is shown.
    assert closest_sentence(question, found).span_text.startswith("The Oscars 2020")
    assert closest_sentence(question, found, "Chip exports grew 66.7% [1].").span_text.startswith("The Oscars 2020")


def test_the_closest_sentence_holds_what_the_reply_adds_only_where_the_question_is_talked_about():
    nobel = ("The 2022 Nobel Prize in Literature was announced in Stockholm on Thursday. "
             "Annie Ernaux took the prize for her memoirs. Peter Handke spoke at the ceremony.")
    found = one_passage("nobel.txt", "Nobel", nobel)
    question = "Who won the 2022 Nobel Prize in Literature?"
    # The reply restates the question: by its share of terms the announcement wins; what it adds (the name) is in
    # the sentence that shares "prize" with the question.
    reply = "The 2022 Nobel Prize in Literature was won by Annie Ernaux [1]."
    assert closest_sentence(question, found, reply).span_text == "Annie Ernaux took the prize for her memoirs."
    # An invented name in a sentence about something else does not pull the refusal's sentence there.
    invented = "The 2022 Nobel Prize in Literature was won by Peter Handke [1]."
    assert closest_sentence(question, found, invented).span_text.startswith("The 2022 Nobel Prize")


def test_what_a_reply_adds_does_not_count_in_a_sentence_about_other_figures():
    olympics = ("Athens hosted the Summer Olympic Games in 2004. On 6 July 2005 the IOC chose London as the host "
                "city for the 2012 Olympic Games.")
    found = one_passage("olympics.txt", "Olympics", olympics)
    # A wrong reply's name sits in a sentence that shares "Olympic" with the question but gives other years.
    shown = closest_sentence("Which city hosted the Olympic Games in 2004?", found,
                             "London hosted the Olympic Games in 2004 [1].")
    assert shown.span_text == "Athens hosted the Summer Olympic Games in 2004."


def test_support_needs_every_number():
    assert support("It is 1.02 trillion won.", P2) == 1.0
    assert support("It is 1.5 trillion won.", P2) == 0.0


def test_correct_marker_is_kept_and_span_located():
    result = check_citations("The ministry will deploy 1.02 trillion won by 2027 [2].", passages(), 0.5)
    assert result.text == "The ministry will deploy 1.02 trillion won by 2027 [2]."
    assert not result.fixes and not result.unsupported
    (citation,) = result.citations
    assert citation.marker == 2 and citation.span_text.startswith("The ministry will deploy 1.02 trillion")
    p2 = passages()[1]
    assert (citation.span_start, citation.span_end) == (p2.start, p2.start + P2.index(" Minister"))


def test_wrong_marker_is_fixed():
    result = check_citations("Chip exports rose 66.7% in February [1].", passages(), 0.5)
    assert result.text == "Chip exports rose 66.7% in February [3]."
    assert result.fixes and [c.marker for c in result.citations] == [3]


def test_missing_marker_is_added_and_unsupported_sentence_flagged():
    result = check_citations("Lee Jong-ho is the minister. Seoul has 9.7 million people [1].", passages(), 0.5)
    assert result.text.startswith("Lee Jong-ho is the minister [2].")
    assert result.unsupported == ["Seoul has 9.7 million people."]
    assert "[1]" not in result.text


def test_marker_forms_are_normalised():
    assert normalise_markers("Yes [1, 3] and (Passage 2) and passage 4") == "Yes [1][3] and [2] and [4]"


def test_bare_labels():
    assert is_bare_label("[1]") and is_bare_label("Passage 2.") and is_bare_label(" [3] ")
    assert not is_bare_label("Passage 2 says 909 billion won [2].")


def test_markers_after_the_stop_stay_with_their_sentence():
    assert split_sentences("Exports rose. [3] Seoul has a plan [1][2]. Lee spoke.") == [
        "Exports rose. [3]", "Seoul has a plan [1][2].", "Lee spoke."]
    result = check_citations("Chip exports rose 66.7% in February. [3] The ministry will deploy 1.02 trillion won [2].",
                             passages(), 0.5)
    assert result.text == "Chip exports rose 66.7% in February [3]. The ministry will deploy 1.02 trillion won [2]."
    assert not result.fixes and not result.unsupported


def test_supporting_span_keeps_abbreviations_whole():
    passage = passages()[0]
    passage.text = "Officials said the U.S. and Korea will invest 909 billion won in AI. Seoul hosts the talks."
    start, end, span, _ = supporting_span("The U.S. and Korea will invest 909 billion won.", passage)
    assert span == "Officials said the U.S. and Korea will invest 909 billion won in AI."
    assert (start, end) == (passage.start, passage.start + len(span))


def test_filler_sentences_are_dropped():
    text = ("The ministry will deploy 1.02 trillion won by 2027 [2]. This is supported by passage. "
            "This information is supported by passage [1]. This is stated in passage [1]. According to the passages.")
    result = check_citations(text, passages(), 0.5)
    assert result.text == "The ministry will deploy 1.02 trillion won by 2027 [2]."
    assert result.unsupported == [] and result.supported_sentences == 1
    assert [c.marker for c in result.citations] == [2]
    assert sum(f.startswith("dropped filler: ") for f in result.fixes) == 4


def test_what_is_not_filler():
    assert is_filler("This is supported by the passages.")
    assert not is_filler("No.")  # a short answer, no words about the sources
    assert not is_filler("This is not stated in the passages.")
    assert not is_filler("The figure is stated in passage 2.")  # still carries a number
    assert not is_filler("Exports are mentioned in the article.")


def test_a_figure_next_to_a_name_its_passage_lacks_is_unsupported():
    texts = ["OpenAI CEO Sam Altman expressed interest in investing in Korean startups.",
             "The government will invest 909 billion won in AI for all people."]
    ps = [Passage(i, "seed.txt", "Seed", t, 0, len(t), (i + 1, i + 1), i + 1, {"dense_similarity": 0.5})
          for i, t in enumerate(texts)]
    assert names("Sam Altman plans to invest 909 billion won in Korean startups.") >= {"altma", "korea"}
    result = check_citations("Sam Altman plans to invest 909 billion won in Korean startups [2].", ps, 0.5)
    assert result.supported_sentences == 0 and result.unsupported
    assert claim_support("The government will invest 909 billion won.", texts[1]) == 1.0
