"""Shared fixtures: real packaged models (prepared once in the user cache), real index files in temp folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import rag  # noqa: F401  - offline environment first
from rag.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SEED_CORPUS = REPO / "corpus"
SEED_ARTICLE = SEED_CORPUS / "south-korea-ai-investment.txt"
# The generator the answer tests run on; CI uses the default unless RAG_TEST_GENERATOR says otherwise.
TEST_GENERATOR = os.environ.get("RAG_TEST_GENERATOR", "")


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the defaults: a developer's rag.toml or RAG_* variables must not leak in."""
    for key in list(os.environ):
        if key.startswith("RAG_") and key != "RAG_TEST_GENERATOR":
            monkeypatch.delenv(key)
    monkeypatch.chdir(REPO)


def make_settings(tmp: Path, **changes) -> Settings:
    base = load_settings(config_file=None, index_dir=tmp / "index", corpus_dir=tmp / "corpus")
    if TEST_GENERATOR:
        changes.setdefault("generator", TEST_GENERATOR)
    return base.replace(**changes)


@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    (tmp_path / "corpus").mkdir()
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def seed_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over a copy of the seed corpus with its own index folder (built once per session)."""
    tmp = tmp_path_factory.mktemp("seed")
    shutil.copytree(SEED_CORPUS, tmp / "corpus", ignore=shutil.ignore_patterns("eval"))
    return make_settings(tmp)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
