"""The BM25 index saved by `rag index` and memory-mapped at load (rag/indexing/bm25.py), against bm25s in memory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rag.indexing.bm25 import BM25Stage
from rag.indexing.build import StaleIndex, build_index, current_build, load_index
from rag.retrieval import Retriever
from tests.conftest import SEED_ARTICLE, SEED_CORPUS, write

pytestmark = pytest.mark.integration


def _questions() -> list[str]:
    lines = (SEED_CORPUS / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


@pytest.fixture
def built(tmp_settings):
    """A real build: the seed article and 40 notes recombining its sentences (look-alike passages)."""
    write(tmp_settings.corpus_dir / "seed.txt", SEED_ARTICLE.read_text(encoding="utf-8"))
    sentences = SEED_ARTICLE.read_text(encoding="utf-8").split(". ")
    for n in range(40):
        write(tmp_settings.corpus_dir / f"note{n:02}.txt",
              f"Note {n}\n" + ". ".join(sentences[(n * 3) % 20:(n * 3) % 20 + 3]) + ".\n")
    build_index([tmp_settings.corpus_dir], tmp_settings.index_dir, tmp_settings, progress=False)
    return load_index(tmp_settings.index_dir)


def test_the_saved_index_is_memory_mapped_and_ranks_as_in_memory(built):
    saved = built.lexical
    assert saved is not None and built.manifest["lexical"]["passages"] == len(built.chunks)
    assert isinstance(saved._model.scores["data"], np.memmap)  # read from disk, not loaded
    in_memory = BM25Stage.in_memory([(c.title, c.text) for c in built.chunks])
    questions = _questions()
    assert len(questions) >= 100
    found = 0
    for question in questions:
        mapped, memory = saved.search(question, 10), in_memory.search(question, 10)
        assert [i for i, _ in mapped] == [i for i, _ in memory], question
        assert np.allclose([s for _, s in mapped], [s for _, s in memory], rtol=1e-6), question
        found += bool(mapped)
    assert found >= 0.9 * len(questions)  # the comparison is over real rankings, not empty ones


def test_a_build_from_before_saved_indexes_still_searches_bm25(built, tmp_settings):
    build = current_build(tmp_settings.index_dir)
    manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    del manifest["lexical"]
    (build / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    shutil.rmtree(build / "bm25")
    old = load_index(tmp_settings.index_dir)
    assert old.lexical is None
    question = "How much will South Korea invest in AI semiconductors?"
    assert Retriever(old, tmp_settings).bm25.search(question, 10) == built.lexical.search(question, 10)


def test_a_damaged_saved_index_is_named_and_rebuilt(built, tmp_settings):
    build = current_build(tmp_settings.index_dir)
    (build / "bm25" / "vocab.index.json").write_text("{", encoding="utf-8")
    with pytest.raises(StaleIndex, match="rebuild"):
        load_index(tmp_settings.index_dir)
    assert build_index([tmp_settings.corpus_dir], tmp_settings.index_dir, tmp_settings, progress=False).rebuilt
    assert load_index(tmp_settings.index_dir).lexical is not None
