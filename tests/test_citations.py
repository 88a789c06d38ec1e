from rag.citations import check_citations, is_bare_label, key_terms, normalise_markers, support
from rag.retrieval import Passage

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


def test_numbers_are_normalised():
    assert key_terms("1.02-trillion won")[0] == key_terms("1.02 trillion won")[0] == {"1.02"}
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
