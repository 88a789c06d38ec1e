"""Chunking and embedding on Ray Data (rag/indexing/distributed.py) against the in-process path, on a real local Ray."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import rag.indexing.distributed as distributed
from rag.indexing.distributed import ClusterUnreachable, RayMissing, RayRequestError, connect, ray_embedded
from rag.ingest.chunking import chunk_document, chunking
from rag.ingest.reading import read_document
from rag.models.embedders import get_embedder
from rag.types import Document
from tests.conftest import SEED_ARTICLE, free_port, make_settings, write


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray of 2 CPUs for the module's tests."""
    import ray

    started = connect("local", num_cpus=2)
    yield
    if started:
        ray.shutdown()


def corpus(folder: Path) -> list[Document]:
    """The seed article and synthetic ones of every reader and of one to many chunks, not sorted by size."""
    paragraph = ("Seoul's port authority said container traffic rose 4.2% in the first quarter. "
                 "Officials expect the new terminal to open in 2031, two years later than planned. ")
    files = [
        write(folder / "short.txt", "Short note\nThe library opens at 9 a.m. on weekdays.\n"),
        SEED_ARTICLE,
        write(folder / "long.md", "---\ntitle: Port report\nsource: Harbour Daily\n---\n"
              + "\n".join(f"{paragraph}Paragraph {n} adds figure {n * 17}." for n in range(12)) + "\n"),
        write(folder / "page.html", "<html><head><title>Fair</title></head><body><h1>Fair</h1>"
              "<p>The trade fair drew 48,000 visitors.</p><p>It ends on Sunday.</p></body></html>"),
        write(folder / "one-line.txt", "Title only line\n" + paragraph * 3 + "\n"),
        write(folder / "unicode.txt", "Überblick\nDer Umsatz stieg um 3 % — laut Bericht. 서울의 수출은 늘었다.\n"),
        write(folder / "tiny.txt", "Tiny\nOne sentence.\n"),
    ]
    return [read_document(path, path.name, 20.0) for path in files]


@pytest.mark.integration
def test_same_chunks_and_vectors_in_input_order(local_ray: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Two windows, batches of 2 documents and two workers: order must hold across windows and workers.
    monkeypatch.setattr(distributed, "WINDOW_DOCUMENTS", 4)
    settings = make_settings(tmp_path, embed_batch_size=2)
    documents = corpus(tmp_path / "corpus")
    embedder = get_embedder(settings)

    results = list(ray_embedded(documents, settings, workers=2, threads_per_worker=1))

    assert [id(doc) for doc, _, _ in results] == [id(doc) for doc in documents]
    assert sum(len(chunks) > 1 for _, chunks, _ in results) >= 2  # some documents of several chunks
    for doc, chunks, vectors in results:
        expected = chunk_document(doc, embedder.count_tokens, *chunking(settings))
        assert [c.to_dict() for c in chunks] == [c.to_dict() for c in expected], doc.doc_id
        assert vectors.dtype == np.float32 and vectors.shape == (len(expected), embedder.dim)
        cosines = (vectors * embedder.embed([c.text for c in expected])).sum(axis=1)
        assert cosines.min() >= 0.9999, (doc.doc_id, cosines)


@pytest.mark.integration
def test_workers_that_cannot_fit_and_a_second_cluster_are_refused(local_ray: None, tmp_path: Path) -> None:
    import ray

    settings = make_settings(tmp_path)
    with pytest.raises(RayRequestError, match="do not fit"):  # Ray itself would wait for ever
        next(ray_embedded([], settings, threads_per_worker=4))
    with pytest.raises(RayRequestError, match="do not fit"):
        next(ray_embedded([], settings, workers=3, threads_per_worker=1))
    assert connect(ray.get_runtime_context().gcs_address) is False  # the cluster this process is connected to
    with socket.create_server(("127.0.0.1", 0)) as other:  # something listens there, but it is not this cluster
        address = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(RayRequestError, match=f"before joining {address}"):
            next(ray_embedded([], settings, address=address))


@pytest.mark.integration
def test_rag_index_on_ray_writes_the_same_index_as_in_process(local_ray: None, tmp_path: Path) -> None:
    import json

    from rag.indexing.build import build_index, load_index

    settings = make_settings(tmp_path)
    documents = corpus(settings.corpus_dir)
    write(settings.corpus_dir / "seed.txt", SEED_ARTICLE.read_text(encoding="utf-8"))
    ray_report = build_index([settings.corpus_dir], tmp_path / "on-ray", settings, progress=False, ray="local")
    here_report = build_index([settings.corpus_dir], tmp_path / "here", settings, progress=False)
    on_ray, here = load_index(tmp_path / "on-ray"), load_index(tmp_path / "here")

    assert ray_report.embedded_chunks == here_report.embedded_chunks == len(here.chunks) > len(documents)
    assert [c.to_dict() for c in on_ray.chunks] == [c.to_dict() for c in here.chunks]
    assert ((on_ray.vectors * here.vectors).sum(axis=1)).min() >= 0.9999
    assert on_ray.documents == here.documents
    assert on_ray.store.size == here.store.size == len(here.chunks)
    question = "How much will South Korea invest in AI chips?"
    assert on_ray.lexical.search(question, 10) == here.lexical.search(question, 10)
    assert json.loads((on_ray.folder / "manifest.json").read_text())["counts"] == here.manifest["counts"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_unreachable_cluster_is_a_clear_error_fast(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    for address in ("127.0.0.1:1", f"ray://127.0.0.1:{free_port()}"):
        started = time.monotonic()
        with pytest.raises(ClusterUnreachable, match=address.replace(".", r"\.")):
            next(ray_embedded([], settings, address=address))
        assert time.monotonic() - started < distributed.CONNECT_TIMEOUT_S + 5


@pytest.mark.unit
def test_missing_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(RayMissing, match=r"pip install -e '\.\[scale\]'"):
        next(ray_embedded([], make_settings(tmp_path)))
