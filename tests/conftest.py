"""Shared fixtures: real packaged models (prepared once in the user cache), real index files in temp folders."""

from __future__ import annotations

import os
import shutil
import socket
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cache_with_models(folder: Path) -> Path:
    """An empty cache folder (`folder`/cache) whose models/ links to the already assembled, verified model files."""
    from rag.models import GENERATORS, ensure_gguf

    cache = folder / "cache"
    (cache / "models").mkdir(parents=True, exist_ok=True)
    settings = Settings()
    for spec in GENERATORS.values():
        gguf = ensure_gguf(spec, settings, progress=False)
        for path in (gguf, gguf.with_name(gguf.name + ".verified.json")):
            (cache / "models" / path.name).symlink_to(path)
    return cache


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest's hook
    """Say loudly what was skipped and why: a skipped test is a check that did not run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    terminalreporter.section(f"SKIPPED: {len(skipped)} test(s) did not run", sep="!", yellow=True, bold=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"  {report.nodeid}: {reason}", yellow=True)
