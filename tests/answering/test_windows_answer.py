"""The reading window with the real generator: the seed article's passages read as retrieved passages (not the
whole document), whole and cut to 96-token windows, give the same figure with exact citations from a shorter
prompt. The window's rules are tested on hand-made passages in test_windows.py."""

import pytest

from rag.answering.flow import answer

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize(("question", "figure"), [
    ("How much money will the science ministry deploy for AI semiconductor R&D by 2027?", "1.02 trillion won"),
])
def test_a_window_answers_with_the_figure_the_whole_passage_gives(seed_settings, question, figure):
    passages = seed_settings.replace(whole_document=False)
    whole = answer(question, settings=passages)
    window = answer(question, settings=passages.replace(read_window_tokens=96))
    for result in (whole, window):
        assert not result.refused and figure in result.text, result
    assert window.usage["calls"][0]["prompt_tokens"] < whole.usage["calls"][0]["prompt_tokens"]
    for citation in window.citations:
        article = (seed_settings.corpus_dir / citation.doc_id).read_text(encoding="utf-8")
        assert article[citation.span_start:citation.span_end] == citation.span_text
    assert figure in " ".join(c.span_text for c in window.citations)
