"""One contract for every vector store: FAISS files, Milvus Lite embedded, and Milvus Lite as a server on loopback.

Real embedder, real FAISS files and real Milvus collections; the index is built through rag.index as `rag index`
builds it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rag.index
from rag.index import build_index, load_index
from rag.models import get_embedder
from rag.vectorstore import collection_name, milvus_client
from tests.conftest import REPO, SEED_CORPUS, free_port, make_settings, write

ARTICLE_A = "Chip exports\nSouth Korea's chip exports rose 66.7% in February. Demand for AI drove the rise.\n"
ARTICLE_B = "Budget plan\nThe government will invest 909 billion won in everyday AI. The plan began in June.\n"
ARTICLE_B2 = "Budget plan\nThe government will invest 1.2 trillion won in robots. The plan began in July.\n"
BACKENDS = ["faiss", "milvus-lite", "milvus-server"]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """`milvus-lite server` on loopback (its default host is 0.0.0.0: always pass one)."""
    data, port = tmp_path_factory.mktemp("milvus-server"), free_port()
    log = (data / "server.log").open("w")
    process = subprocess.Popen([str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir",
                                str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, (data / "server.log").read_text()[-2000:]
        time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture(params=BACKENDS)
def store_settings(request, tmp_path):
    (tmp_path / "corpus").mkdir()
    changes = {"faiss": {}, "milvus-lite": {"vector_store": "milvus"}}.get(request.param)
    if changes is None:
        changes = {"vector_store": "milvus", "milvus_uri": request.getfixturevalue("milvus_server")}
    return make_settings(tmp_path, **changes)


def ids_of(settings, hits) -> set[str]:
    index = load_index(settings.index_dir)
    return {index.chunks[i].doc_id for i, _ in hits}


def search(settings, question: str, n: int = 5, doc_id: str | None = None):
    query = get_embedder(settings).embed([question])[0]
    return load_index(settings.index_dir).store.search(query, n, doc_id)


def test_add_change_delete_and_search(store_settings):
    settings, corpus = store_settings, store_settings.corpus_dir
    write(corpus / "a.txt", ARTICLE_A)
    first = build_index([corpus], settings.index_dir, settings, progress=False)
    assert first.rebuilt and load_index(settings.index_dir).store.backend == settings.vector_store
    write(corpus / "b.txt", ARTICLE_B)
    added = build_index([corpus], settings.index_dir, settings, progress=False)
    assert added.added == ["b.txt"] and not added.rebuilt
    assert added.embedded_chunks == len([c for c in load_index(settings.index_dir).chunks if c.doc_id == "b.txt"])
    hits = search(settings, "How much will the government invest in everyday AI?", 1)
    assert ids_of(settings, hits) == {"b.txt"} and 0.3 < hits[0][1] <= 1.0001
    write(corpus / "b.txt", ARTICLE_B2)
    changed = build_index([corpus], settings.index_dir, settings, progress=False)
    assert changed.updated == ["b.txt"] and changed.embedded_chunks >= 1
    text = load_index(settings.index_dir).chunks[search(settings, "investment in robots", 1)[0][0]].text
    assert "robots" in text
    (corpus / "b.txt").unlink()
    removed = build_index([corpus], settings.index_dir, settings, progress=False)
    assert removed.removed == ["b.txt"]
    assert ids_of(settings, search(settings, "investment in robots", 10)) == {"a.txt"}


def test_search_filtered_by_document(store_settings):
    write(store_settings.corpus_dir / "a.txt", ARTICLE_A)
    write(store_settings.corpus_dir / "b.txt", ARTICLE_B)
    build_index([store_settings.corpus_dir], store_settings.index_dir, store_settings, progress=False)
    question = "How much will the government invest in everyday AI?"
    assert ids_of(store_settings, search(store_settings, question, 10, doc_id="a.txt")) == {"a.txt"}
    assert search(store_settings, question, 10, doc_id="missing.txt") == []


def test_an_index_built_by_another_process_answers_here(store_settings):
    write(store_settings.corpus_dir / "b.txt", ARTICLE_B)
    env = {**os.environ, "RAG_INDEX_DIR": str(store_settings.index_dir), "RAG_INDEX_STATES": "false",
           "RAG_CORPUS_DIR": str(store_settings.corpus_dir), "RAG_VECTOR_STORE": store_settings.vector_store,
           "RAG_MILVUS_URI": store_settings.milvus_uri}
    done = subprocess.run([sys.executable, "-m", "rag.cli", "index"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ids_of(store_settings, search(store_settings, "everyday AI investment", 1)) == {"b.txt"}


def test_a_write_that_fails_half_way_leaves_the_previous_build_answering(store_settings, monkeypatch):
    settings, corpus = store_settings, store_settings.corpus_dir
    write(corpus / "a.txt", ARTICLE_A)
    build_index([corpus], settings.index_dir, settings, progress=False)
    before = load_index(settings.index_dir).folder
    write(corpus / "b.txt", ARTICLE_B)
    real_write = rag.index.write_store

    def crash_after_writing_vectors(*args, **kwargs):
        real_write(*args, **kwargs)  # the store holds the new vectors; the swap never happens
        raise KeyboardInterrupt("power cut before the swap")

    monkeypatch.setattr(rag.index, "write_store", crash_after_writing_vectors)
    with pytest.raises(KeyboardInterrupt):
        build_index([corpus], settings.index_dir, settings, progress=False)
    monkeypatch.undo()
    assert load_index(settings.index_dir).folder == before
    assert ids_of(settings, search(settings, "everyday AI investment", 10)) == {"a.txt"}
    build_index([corpus], settings.index_dir, settings, progress=False)
    assert ids_of(settings, search(settings, "everyday AI investment", 1)) == {"b.txt"}
    if settings.vector_store == "milvus":  # the failed write's collection is gone, only the current one is left
        index = load_index(settings.index_dir)
        client = milvus_client(index.manifest["store"]["uri"])
        mine = [n for n in client.list_collections() if n.startswith(collection_name(settings.index_dir, ""))]
        assert mine == [index.manifest["store"]["collection"]]


def test_a_missing_collection_or_file_is_rebuilt_not_used(store_settings):
    write(store_settings.corpus_dir / "a.txt", ARTICLE_A)
    build_index([store_settings.corpus_dir], store_settings.index_dir, store_settings, progress=False)
    index = load_index(store_settings.index_dir)
    if store_settings.vector_store == "milvus":
        milvus_client(index.manifest["store"]["uri"]).drop_collection(index.manifest["store"]["collection"])
    else:
        (index.folder / "index.faiss").unlink()
    with pytest.raises(rag.index.StaleIndex, match="rebuild"):
        load_index(store_settings.index_dir)
    assert build_index([store_settings.corpus_dir], store_settings.index_dir, store_settings, progress=False).rebuilt


def test_changing_the_backend_rebuilds(tmp_settings):
    write(tmp_settings.corpus_dir / "a.txt", ARTICLE_A)
    build_index([tmp_settings.corpus_dir], tmp_settings.index_dir, tmp_settings, progress=False)
    milvus = tmp_settings.replace(vector_store="milvus")
    assert build_index([milvus.corpus_dir], milvus.index_dir, milvus, progress=False).rebuilt
    assert load_index(milvus.index_dir).manifest["store"]["backend"] == "milvus"
    assert json.loads((load_index(milvus.index_dir).folder / "manifest.json").read_text())["fingerprint"][
        "vector_store"] == "milvus"


@pytest.mark.slow
def test_faiss_flat_and_milvus_flat_rank_and_answer_the_question_set_alike(tmp_path):
    from rag.evaluation import load_questions

    shutil.copytree(SEED_CORPUS, tmp_path / "corpus", ignore=shutil.ignore_patterns("eval"))
    faiss_settings = make_settings(tmp_path, index_dir=tmp_path / "faiss")
    milvus_settings = make_settings(tmp_path, index_dir=tmp_path / "milvus", vector_store="milvus")
    for settings in (faiss_settings, milvus_settings):
        build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    questions = [q.question for q in load_questions(REPO / "corpus" / "eval" / "questions.jsonl")]
    queries = get_embedder(faiss_settings).embed(questions)
    faiss_store = load_index(faiss_settings.index_dir).store
    milvus_store = load_index(milvus_settings.index_dir).store
    for question, query in zip(questions, queries, strict=True):
        exact, served = faiss_store.search(query, 5), milvus_store.search(query, 5)
        assert [i for i, _ in exact] == [i for i, _ in served], question
        assert [s for _, s in exact] == pytest.approx([s for _, s in served], abs=1e-4)
    from rag.answer import answer

    answer(questions[0], settings=faiss_settings)  # both then read the document from the same kept state
    for question in questions[:3]:
        on_faiss, on_milvus = answer(question, settings=faiss_settings), answer(question, settings=milvus_settings)
        assert [p.chunk_id for p in on_faiss.passages] == [p.chunk_id for p in on_milvus.passages]
        assert (on_faiss.text, on_faiss.refused) == (on_milvus.text, on_milvus.refused), question
