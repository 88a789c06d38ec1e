"""docs/reference.md matches the docstrings (tools/api_reference.py), every exported name has an example, and
every example runs: as doctests, with the real models, in a folder holding a copy of the seed corpus (so that
"corpus" and "index" in the examples are that folder's)."""

from __future__ import annotations

import doctest
import shutil

import pytest

import rag
from tests.conftest import SEED_CORPUS
from tools import api_reference


@pytest.mark.unit
def test_the_reference_page_is_current():
    assert api_reference.main(["--check"]) == 0, "docs/reference.md is stale: python -m tools.api_reference"


@pytest.mark.unit
def test_every_exported_name_has_an_example():
    tested = {test.name.removeprefix("rag.").split(".")[0] for test in api_reference.examples()}
    assert sorted(set(rag.__all__) - tested) == []


@pytest.mark.integration
def test_the_examples_run(tmp_path, monkeypatch):
    shutil.copytree(SEED_CORPUS, tmp_path / "corpus", ignore=shutil.ignore_patterns("eval"))
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    for test in api_reference.examples():
        outcome = runner.run(test, out=failures.append)
        assert outcome.attempted, test.name
    assert not failures, "".join(failures)
