"""The library's one error family: every error class joins it, stays importable where it was, and is reported the
same way by the page, the CLI and the API (rag.errors.outcome)."""

from __future__ import annotations

import pytest

from rag.answering.flow import QuestionError
from rag.errors import EXPECTED, RagError, kind_of, outcome
from rag.evaluation.questions import EvaluationError
from rag.generators.openai_server import ServerError
from rag.indexing.articles import ArticleError, UnknownArticle, UploadTooLarge
from rag.indexing.build import IndexBuildError, StaleIndex
from rag.indexing.stores import VectorStoreError
from rag.ingest.reading import IngestError
from rag.models.registry import HashMismatch, MissingModelPackage, ModelError
from rag.settings import SettingsError

pytestmark = pytest.mark.unit

# class -> (HTTP status, CLI exit code); the builtin base each had before is kept, so old `except` clauses still work
REPORTED = {
    QuestionError: (400, 2, ValueError), EvaluationError: (400, 2, ValueError), IngestError: (400, 2, ValueError),
    SettingsError: (400, 2, ValueError), ArticleError: (400, 2, ValueError), IndexBuildError: (400, 2, RuntimeError),
    UnknownArticle: (404, 2, ValueError), UploadTooLarge: (413, 2, ValueError),
    StaleIndex: (503, 1, RuntimeError), ServerError: (503, 1, RuntimeError),
    ModelError: (500, 1, RuntimeError), MissingModelPackage: (500, 1, RuntimeError),
    HashMismatch: (500, 1, RuntimeError), VectorStoreError: (500, 1, RuntimeError),
}


@pytest.mark.parametrize("error", list(REPORTED), ids=lambda e: e.__name__)
def test_every_library_error_is_reported_by_one_table(error: type[Exception]) -> None:
    status, exit_code, builtin = REPORTED[error]
    exc = error("what went wrong, and what to do")
    assert isinstance(exc, RagError) and isinstance(exc, builtin) and isinstance(exc, EXPECTED)
    assert (outcome(exc).status, outcome(exc).exit_code) == (status, exit_code)
    assert outcome(exc).expected and kind_of(exc) != "unexpected"


def test_other_errors_are_unexpected_except_the_system_s() -> None:
    assert outcome(OSError("disk full")).expected and outcome(OSError()).status == 500
    assert not outcome(KeyError("bug")).expected and kind_of(KeyError()) == "unexpected"
    assert outcome(KeyError()).exit_code == 1
