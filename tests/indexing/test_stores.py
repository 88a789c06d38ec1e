"""One contract for every vector store: FAISS files, Milvus Lite embedded, and Milvus Lite as a server on loopback.

Real embedder, real FAISS files and real Milvus collections; the index is built by rag.indexing.build as `rag index`
builds it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rag.indexing.build
import rag.indexing.stores
from rag.indexing.build import build_index, load_index
from rag.indexing.stores import collection_name, milvus_client
from rag.models.embedders import get_embedder
from tests.conftest import REPO, SEED_ARTICLE, SEED_CORPUS, free_port, make_settings, write

pytestmark = pytest.mark.integration

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
    real_write = rag.indexing.stores.write_store

    def crash_after_writing_vectors(*args, **kwargs):
        real_write(*args, **kwargs)  # the store holds the new vectors; the swap never happens
        raise KeyboardInterrupt("power cut before the swap")

    monkeypatch.setattr(rag.indexing.build, "write_store", crash_after_writing_vectors)
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
    with pytest.raises(rag.indexing.build.StaleIndex, match="rebuild"):
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
    from rag.evaluation.questions import load_questions

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
    from rag.answering.flow import answer

    answer(questions[0], settings=faiss_settings)  # both then read the document from the same kept state
    for question in questions[:3]:
        on_faiss, on_milvus = answer(question, settings=faiss_settings), answer(question, settings=milvus_settings)
        assert [p.chunk_id for p in on_faiss.passages] == [p.chunk_id for p in on_milvus.passages]
        assert (on_faiss.text, on_faiss.refused) == (on_milvus.text, on_milvus.refused), question


# ---------------------------------------------------------------- Milvus updated in place


def _notes(corpus: Path, names: range, sentences_each: int = 3, salt: str = "") -> None:
    """Short articles (about one chunk each) of sentences drawn from the seed article; `salt` changes their text."""
    import random

    from rag.text import split_sentences

    sentences = split_sentences(SEED_ARTICLE.read_text(encoding="utf-8"))
    for n in names:
        drawn = random.Random(n).sample(sentences, sentences_each)
        write(corpus / f"n{n:02}.txt", f"Note {n}\nItem {n} sold {n * 37 + 11} units{salt}. " + " ".join(drawn) + "\n")


def _rows(index) -> dict[int, tuple[str, tuple[float, ...]]]:
    """Every row of the index's Milvus collection: key -> (doc_id, vector)."""
    store = index.manifest["store"]
    found = milvus_client(store["uri"]).query(store["collection"], filter="key >= 0", limit=16384,
                                              output_fields=["key", "doc_id", "vector"])
    return {int(r["key"]): (r["doc_id"], tuple(np.round(np.asarray(r["vector"], np.float32), 5))) for r in found}


def _exact(index, query: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
    """Exact inner-product search over the build's own vectors.npy: what a FLAT store must return."""
    rows = [c.id for c in index.chunks if doc_id is None or c.doc_id == doc_id]
    scores = np.asarray(index.vectors[rows]) @ query
    best = np.argsort(-scores, kind="stable")[:n]
    return [(rows[i], float(scores[i])) for i in best]


def _same_hits(got, expected) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_an_incremental_update_writes_only_the_touched_articles(tmp_settings, monkeypatch):
    settings = tmp_settings.replace(vector_store="milvus")
    corpus = settings.corpus_dir
    _notes(corpus, range(12))
    _notes(corpus, range(12, 13), sentences_each=16)  # n12: several chunks
    build_index([corpus], settings.index_dir, settings, progress=False)
    before = load_index(settings.index_dir)
    rows_before = _rows(before)
    assert set(rows_before) == {c.key for c in before.chunks}
    client = milvus_client(before.manifest["store"]["uri"])
    inserted: list[int] = []
    real_insert = client.insert

    def counting_insert(name, data, *args, **kwargs):  # pymilvus's insert, counted
        inserted.extend(row["key"] for row in data)
        return real_insert(name, data, *args, **kwargs)

    monkeypatch.setattr(client, "insert", counting_insert)
    _notes(corpus, range(13, 15))  # added
    _notes(corpus, range(12, 13), sentences_each=16, salt=" (revised)")  # changed: all its chunks re-embedded
    (corpus / "n03.txt").unlink()  # removed
    report = build_index([corpus], settings.index_dir, settings, progress=False)
    assert (report.added, report.updated, report.removed) == (["n13.txt", "n14.txt"], ["n12.txt"], ["n03.txt"])
    after = load_index(settings.index_dir)
    assert after.manifest["store"]["collection"] == before.manifest["store"]["collection"]  # updated in place
    touched = {"n12.txt", "n13.txt", "n14.txt"}
    new_keys = {c.key for c in after.chunks if c.doc_id in touched}
    assert sorted(inserted) == sorted(new_keys) and len(inserted) == report.embedded_chunks
    assert min(new_keys) >= before.manifest["next_key"]
    rows_after = _rows(after)
    assert set(rows_after) == {c.key for c in after.chunks}  # the retired rows are deleted, nothing else is left
    untouched = {c.key for c in before.chunks if c.doc_id not in touched | {"n03.txt"}}
    assert {k: rows_after[k] for k in untouched} == {k: rows_before[k] for k in untouched}  # same keys and vectors
    old_n12 = {c.key for c in before.chunks if c.doc_id == "n12.txt"}
    assert len(old_n12) > 1 and not old_n12 & set(rows_after)
    old_n03 = {c.key for c in before.chunks if c.doc_id == "n03.txt"}
    assert old_n03 and not old_n03 & set(rows_after)
    assert after.manifest["store"]["retired"] == len(old_n12) + len(old_n03)
    assert not (after.folder / "retired.npy").exists()  # the clean-up after the swap finished
    for query in (after.vectors[0], after.vectors[-1], before.vectors[-1]):
        _same_hits(after.store.search(np.asarray(query), 5), _exact(after, np.asarray(query), 5))
        _same_hits(after.store.search(np.asarray(query), 3, doc_id="n12.txt"),
                   _exact(after, np.asarray(query), 3, doc_id="n12.txt"))


def test_faiss_and_milvus_answer_alike_after_several_incremental_updates(tmp_path):
    faiss_settings = make_settings(tmp_path, index_dir=tmp_path / "faiss")
    milvus_settings = make_settings(tmp_path, index_dir=tmp_path / "milvus", vector_store="milvus")
    corpus = faiss_settings.corpus_dir
    _notes(corpus, range(10))
    rounds = [lambda: _notes(corpus, range(10, 13)),
              lambda: (_notes(corpus, range(2, 4), salt=" (revised)"), (corpus / "n05.txt").unlink()),
              lambda: (_notes(corpus, range(13, 15)), (corpus / "n00.txt").unlink(), (corpus / "n11.txt").unlink())]
    questions = ["How much will the government invest in AI?", "semiconductor cluster", "chip exports in February"]
    queries = get_embedder(faiss_settings).embed(questions)
    collections = set()
    for step, change in enumerate([lambda: None, *rounds]):
        change()
        reports = [build_index([corpus], s.index_dir, s, progress=False) for s in (faiss_settings, milvus_settings)]
        assert reports[0].rebuilt == reports[1].rebuilt == (step == 0)
        on_faiss, on_milvus = load_index(faiss_settings.index_dir), load_index(milvus_settings.index_dir)
        collections.add(on_milvus.manifest["store"]["collection"])
        assert [(c.doc_id, c.text) for c in on_faiss.chunks] == [(c.doc_id, c.text) for c in on_milvus.chunks]
        for query in [*queries, np.asarray(on_milvus.vectors[-1])]:
            _same_hits(on_milvus.store.search(query, 5), on_faiss.store.search(query, 5))
            _same_hits(on_milvus.store.search(query, 2, doc_id="n02.txt"),
                       on_faiss.store.search(query, 2, doc_id="n02.txt"))
        assert set(_rows(on_milvus)) == {c.key for c in on_milvus.chunks}
    assert len(collections) == 1  # one collection, updated in place three times


# The child: `rag index` that stops at one moment of its Milvus write, says "paused", and waits to be killed. The
# pause wraps a pymilvus call (after the N-th call of that method returns) or the clean-up after the swap (before
# it), in the child only: the product code runs unchanged. Inserts go two rows at a time, so "insert:1" is a write
# partly done.
KILL_CHILD = """
import sys, time
import pymilvus, rag.indexing.build, rag.indexing.stores
from rag.cli import main

point, _, count = sys.argv[1].partition(":")
calls = [0]

def pause():
    print("paused", flush=True)
    time.sleep(600)

if point == "swapped":
    rag.indexing.build.drop_stale = lambda *args, **kwargs: pause()
else:
    real = getattr(pymilvus.MilvusClient, point)

    def paused_after(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == int(count):
            pause()
        return result

    setattr(pymilvus.MilvusClient, point, paused_after)
rag.indexing.stores.MILVUS_BATCH = 2
sys.exit(main(["index"]))
"""


def test_rag_index_killed_during_a_milvus_update_leaves_the_previous_build_answering(tmp_path, milvus_server,
                                                                                    monkeypatch):
    import signal

    settings = make_settings(tmp_path, vector_store="milvus", milvus_uri=milvus_server)
    corpus = settings.corpus_dir
    env = {**os.environ, "RAG_INDEX_DIR": str(settings.index_dir), "RAG_CORPUS_DIR": str(corpus),
           "RAG_INDEX_STATES": "false", "RAG_VECTOR_STORE": "milvus", "RAG_MILVUS_URI": milvus_server}

    def kill_at(point: str):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, point], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout.readline().strip() == "paused", child.communicate(timeout=60)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        return load_index(settings.index_dir)

    def clean(index) -> None:  # exactly the build's rows in the collection, nothing left to finish
        assert set(_rows(index)) == {c.key for c in index.chunks}
        assert not (index.folder / "retired.npy").exists()
        assert not (settings.index_dir / "milvus-inserting.json").exists()

    _notes(corpus, range(10))
    build_index([corpus], settings.index_dir, settings, progress=False)
    old = load_index(settings.index_dir)
    _notes(corpus, range(10, 13))
    _notes(corpus, range(4, 6), salt=" (revised)")
    (corpus / "n07.txt").unlink()
    embedder = get_embedder(settings)
    queries = [*embedder.embed([(corpus / f"n{n:02}.txt").read_text() for n in (4, 5, 10, 11, 12)]),
               *np.asarray(old.vectors[[c.id for c in old.chunks if c.doc_id in {"n04.txt", "n07.txt"}]])]
    answers = [old.store.search(q, 5) for q in queries]
    for q, hits in zip(queries, answers, strict=True):
        _same_hits(hits, _exact(old, q, 5))
    # before the swap: some rows inserted; the dead write's rows deleted by the next run; all inserted and checked
    for point, written in (("insert:1", 2), ("delete:1", 0), ("query:1", None)):
        index = kill_at(point)
        assert index.folder == old.folder  # the previous build, with exactly its results, beside the dead rows
        dead = [k for k in _rows(old) if k >= old.manifest["store"]["key_bound"]]
        assert len(dead) == (written if written is not None else len(dead)) and (dead or written == 0)
        for q, hits in zip(queries, answers, strict=True):
            _same_hits(index.store.search(q, 5), hits)
    index = kill_at("swapped")  # after the swap, before its clean-up
    assert index.manifest["store"]["collection"] == old.manifest["store"]["collection"]
    assert set(index.documents) == {p.name for p in corpus.iterdir()}
    assert sorted(dead) == sorted(c.key for c in index.chunks if c.key >= old.manifest["next_key"])
    assert {k for k in _rows(index)} > {c.key for c in index.chunks}  # the retired rows are still there...
    for q in queries:  # ... but never answer: left out by the filter, or (too many to name) over-fetched
        _same_hits(index.store.search(q, 5), _exact(index, q, 5))
        _same_hits(index.store.search(q, 3, doc_id="n04.txt"), _exact(index, q, 3, doc_id="n04.txt"))
    with monkeypatch.context() as patch:
        patch.setattr(rag.indexing.stores, "MILVUS_EXCLUDE_MAX", 0)
        index = load_index(settings.index_dir)
        assert "not in" not in index.store._filter and index.store._margin > 0
        for q in queries:
            _same_hits(index.store.search(q, 5), _exact(index, q, 5))
    assert not build_index([corpus], settings.index_dir, settings, progress=False).changed  # finishes the job
    clean(load_index(settings.index_dir))

    (corpus / "n01.txt").unlink()  # killed after the swap again; this time the next run has work of its own
    _notes(corpus, range(13, 14))
    kill_at("swapped")
    _notes(corpus, range(14, 15))
    report = build_index([corpus], settings.index_dir, settings, progress=False)
    assert report.added == ["n14.txt"] and not report.rebuilt
    index = load_index(settings.index_dir)
    clean(index)
    for q in queries:
        _same_hits(index.store.search(q, 5), _exact(index, q, 5))


# ---------------------------------------------------------------- Milvus authentication


class _AuthCheckingRelay:
    """A gRPC relay in front of the `milvus-lite server` (which has no authentication): it records the
    "authorization" header of every call (base64 of the token pymilvus sends) and, with `required`, refuses calls
    without that header, as a Milvus with authentication does; the others go through to the real server."""

    def __init__(self, server_uri: str, required: str | None = None) -> None:
        from concurrent import futures

        import grpc

        self.seen: list[str | None] = []
        self.required = None if required is None else base64.b64encode(required.encode()).decode()
        channel = grpc.insecure_channel(server_uri.removeprefix("http://"))
        relay = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):  # noqa: ANN001, ANN202 - grpc's interface
                metadata = [(k, v) for k, v in details.invocation_metadata if k != "user-agent"]
                authorization = dict(metadata).get("authorization")
                relay.seen.append(authorization)
                forward = channel.unary_unary(details.method)  # bytes in, bytes out

                def handle(request, context):  # noqa: ANN001, ANN202
                    if relay.required is not None and authorization != relay.required:
                        context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing credentials")
                    try:
                        return forward(request, metadata=metadata, timeout=60)
                    except grpc.RpcError as exc:  # the server's own answer, passed on as it is
                        context.abort(exc.code(), exc.details())

                return grpc.unary_unary_rpc_method_handler(handle)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),  # pymilvus pings every 10 s
                                  options=[("grpc.http2.min_ping_interval_without_data_ms", 1000),
                                           ("grpc.http2.max_ping_strikes", 0)])
        self.server.add_generic_rpc_handlers((Handler(),))
        self.uri = f"http://127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None)


def test_milvus_credentials_come_from_the_environment_and_reach_the_server(tmp_path, milvus_server, monkeypatch):
    from rag.indexing.build import StaleIndex
    from rag.indexing.stores import VectorStoreError

    relay = _AuthCheckingRelay(milvus_server, required="alice:s3cret")
    try:
        settings = make_settings(tmp_path, vector_store="milvus", milvus_uri=relay.uri)
        write(settings.corpus_dir / "b.txt", ARTICLE_B)
        monkeypatch.setenv("MILVUS_USER", "alice")
        monkeypatch.setenv("MILVUS_TOKEN", "s3cret")  # with a user: its password
        build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
        assert ids_of(settings, search(settings, "everyday AI investment", 1)) == {"b.txt"}
        assert relay.seen and set(relay.seen) == {base64.b64encode(b"alice:s3cret").decode()}
        manifest = load_index(settings.index_dir).manifest
        assert "s3cret" not in json.dumps(manifest)  # the manifest names the variables, never their values
        assert (manifest["store"]["user_env"], manifest["store"]["token_env"]) == ("MILVUS_USER", "MILVUS_TOKEN")

        monkeypatch.delenv("MILVUS_USER")
        monkeypatch.setenv("MILVUS_TOKEN", "alice:wrong")  # a token alone, as "user:password": refused
        other = settings.replace(index_dir=tmp_path / "other")
        with pytest.raises(VectorStoreError, match="credentials in MILVUS_USER and MILVUS_TOKEN"):
            build_index([other.corpus_dir], other.index_dir, other, progress=False)
        with pytest.raises(StaleIndex, match="credentials"):  # and a reader says the same
            load_index(settings.index_dir)
        monkeypatch.setenv("MILVUS_TOKEN", "alice:s3cret")
        assert ids_of(settings, search(settings, "everyday AI investment", 1)) == {"b.txt"}

        monkeypatch.setenv("MILVUS_USER", "alice")
        monkeypatch.delenv("MILVUS_TOKEN")
        with pytest.raises(VectorStoreError, match="MILVUS_USER is set but MILVUS_TOKEN"):
            build_index([other.corpus_dir], other.index_dir, other, progress=False)

        renamed = other.replace(milvus_user_env="", milvus_token_env="VECTOR_DB_KEY")  # a variable of one's own
        monkeypatch.setenv("VECTOR_DB_KEY", "alice:s3cret")
        build_index([renamed.corpus_dir], renamed.index_dir, renamed, progress=False)
        assert load_index(renamed.index_dir).manifest["store"]["token_env"] == "VECTOR_DB_KEY"
    finally:
        relay.close()
