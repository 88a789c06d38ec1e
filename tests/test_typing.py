"""The package is typed for its users (PEP 561): `py.typed` ships, and a user-style script over the public API
(examples/ask_my_news.py) passes `mypy --strict` (configured in pyproject.toml), so a wrong use is caught before it
runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "ask_my_news.py"
# The modules a user's code meets first: the exports, the collection, the argument checks, the result types,
# the settings and the error family (the answering flow and retrieval behind them are not strict-clean yet).
PUBLIC = [REPO / "rag" / name for name in ("__init__.py", "collection.py", "arguments.py", "types.py", "settings.py",
                                           "errors.py")]


def mypy(scripts: list[Path], cache: Path) -> subprocess.CompletedProcess[str]:
    """mypy as pyproject.toml configures it (strict; rag followed, the libraries it uses read as Any)."""
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *map(str, scripts)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.unit
def test_the_package_says_it_is_typed():
    assert (REPO / "rag" / "py.typed").is_file()
    assert 'rag = ["py.typed"]' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.integration
def test_the_example_script_passes_mypy_strict_and_a_misuse_does_not(tmp_path):
    misuse = tmp_path / "misuse.py"
    misuse.write_text("import rag\n\nreply: rag.Answer = rag.answer(42)\npassages: int = rag.retrieve('x')\n",
                      encoding="utf-8")
    done = mypy([EXAMPLE, misuse, *PUBLIC], tmp_path / "cache")  # one run: all clean but the misuse
    assert done.returncode == 1 and "misuse.py" in done.stdout, done.stdout + done.stderr
    assert 'Argument 1 to "answer" has incompatible type "int"' in done.stdout
    assert '"list[Passage]", variable has type "int"' in done.stdout, done.stdout
    assert "Found 2 errors in 1 file" in done.stdout, done.stdout
