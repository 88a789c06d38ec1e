"""Trimming with the real generator (rag.answer on the seed article): a draft that adds a detail no sentence of the
article states ("… established by the Korean government in 2021") is answered without it, marked partial, and
never refused whole. The trimming rules themselves are tested on fixed replies in test_focus.py."""

import shutil
from pathlib import Path

import pytest

from rag.answering.flow import TRIMMED_NOTE, answer
from rag.settings import Settings
from tests.conftest import SEED_CORPUS, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

QUESTION = "Who established the Metaverse Alliance?"


@pytest.fixture(scope="module")
def default_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The seed corpus with the default embedder (the tests' small embedder retrieves other passages, and the
    generator then writes another draft)."""
    tmp: Path = tmp_path_factory.mktemp("seed-default")
    shutil.copytree(SEED_CORPUS, tmp / "corpus", ignore=shutil.ignore_patterns("eval"))
    return make_settings(tmp, embedder=Settings().embedder)


def test_a_draft_with_one_unstated_year_is_answered_without_it(default_settings):
    trimmed_off = answer(QUESTION, settings=default_settings.replace(trim_details=False))
    # The premise: the generator adds the year of another sentence ("turned its attention to the Metaverse as
    # early as 2021"). If a new prompt or model stops doing so, pick another question that shows the shape.
    assert "2021" in trimmed_off.raw_text, trimmed_off.raw_text

    result = answer(QUESTION, settings=default_settings)
    assert result.raw_text == trimmed_off.raw_text  # the same draft, judged after the trim
    assert not result.refused, result
    assert result.verdict["trimmed"] == ["in 2021"]
    assert "2021" not in result.text and "Korean government" in result.text
    assert result.partial and result.text.endswith(TRIMMED_NOTE)  # it reads as partial where only text is kept
    assert result.citations and "Metaverse Alliance" in result.citations[0].span_text
