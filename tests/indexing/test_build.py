"""`rag index` (rag/indexing/build.py) on the real embedder: FAISS files and manifest, incremental and full
rebuilds, interrupted and killed builds, damaged or foreign builds, index types and memory bounds."""

import json
import time

import faiss
import numpy as np
import pytest

from rag.indexing.build import (
    IndexBuildError,
    StaleIndex,
    build_index,
    check_index,
    current_build,
    load_corpus,
    load_index,
    open_index,
)
from tests.conftest import DEFAULT_EMBEDDER, SEED_ARTICLE, make_settings, write

pytestmark = pytest.mark.integration

ARTICLE_A = "Chip exports\nSouth Korea's chip exports rose 66.7% in February. Demand for AI drove the rise.\n"
ARTICLE_B = "Budget plan\nThe government will invest 909 billion won in everyday AI. The plan began in June.\n"
ARTICLE_C = "Cluster news\nThe semiconductor super cluster will cost 622 trillion won. Samsung leads it.\n"


def corpus_with(settings, **articles):
    for name, text in articles.items():
        write(settings.corpus_dir / f"{name}.txt", text)
    return settings.corpus_dir


def test_build_writes_real_faiss_files_and_manifest(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B)
    report = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert (report.documents, report.added, report.rebuilt) == (2, ["a.txt", "b.txt"], True)
    build = current_build(tmp_settings.index_dir)
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["fingerprint"]["embedder"] == "minilm" and manifest["dim"] == 384
    assert "embedder_precision" not in manifest["fingerprint"]  # float32: indexes of earlier releases stay valid
    assert set(manifest["documents"]) == {"a.txt", "b.txt"}
    index = faiss.read_index(str(build / "index.faiss"))
    assert index.ntotal == report.chunks == len((build / "chunks.jsonl").read_text().splitlines())
    vectors = np.load(build / "vectors.npy", allow_pickle=False)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert not list(build.parent.glob(".tmp-*"))
    assert "chunks/s" in report.summary()


def test_incremental_add_change_delete(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    first = load_index(tmp_settings.index_dir)
    vec_a = first.vectors[[c.id for c in first.chunks if c.doc_id == "a.txt"]]

    again = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert not again.changed and again.embedded_chunks == 0
    assert current_build(tmp_settings.index_dir) == first.folder  # nothing rewritten

    write(corpus / "c.txt", ARTICLE_C)
    write(corpus / "b.txt", ARTICLE_B.replace("909 billion", "1.02 trillion"))
    report = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert (report.added, report.updated, report.removed) == (["c.txt"], ["b.txt"], [])
    second = load_index(tmp_settings.index_dir)
    assert report.embedded_chunks == sum(1 for c in second.chunks if c.doc_id in {"b.txt", "c.txt"})
    kept_a = second.vectors[[c.id for c in second.chunks if c.doc_id == "a.txt"]]
    assert np.array_equal(vec_a, kept_a)  # unchanged article's vectors carried over, not re-embedded
    assert any("1.02 trillion" in c.text for c in second.chunks)
    assert not any("909 billion" in c.text for c in second.chunks)

    (corpus / "a.txt").unlink()
    report = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert report.removed == ["a.txt"] and report.embedded_chunks == 0
    third = load_index(tmp_settings.index_dir)
    assert {c.doc_id for c in third.chunks} == {"b.txt", "c.txt"}
    assert third.store.size == len(third.chunks)
    assert len(list((tmp_settings.index_dir / "builds").iterdir())) == 1  # old builds cleaned up


def test_changed_settings_trigger_full_rebuild(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    other = tmp_settings.replace(chunk_tokens=64, auto_index=False)
    with pytest.raises(StaleIndex, match="chunk_tokens: index 160 vs settings 64"):
        check_index(tmp_settings.index_dir, other, load_corpus([corpus], other)[0])
    report = build_index([corpus], tmp_settings.index_dir, other, progress=False)
    assert report.rebuilt and report.embedded_chunks > 0


def test_out_of_date_index_is_reported_or_rebuilt(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    write(corpus / "b.txt", ARTICLE_B)
    strict = tmp_settings.replace(auto_index=False)
    with pytest.raises(StaleIndex, match=r"out of date .*b.txt.*run `rag index`"):
        open_index(strict)
    loaded = open_index(tmp_settings)  # auto_index on: brought up to date
    assert {c.doc_id for c in loaded.chunks} == {"a.txt", "b.txt"}


def test_crash_during_build_keeps_previous_index(tmp_settings, monkeypatch):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    before = load_index(tmp_settings.index_dir)
    write(corpus / "b.txt", ARTICLE_B)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut while writing the FAISS file")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    monkeypatch.undo()
    after = load_index(tmp_settings.index_dir)
    assert after.folder == before.folder and {c.doc_id for c in after.chunks} == {"a.txt"}
    assert not list((tmp_settings.index_dir / "builds").glob(".tmp-*"))
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)  # and the next run succeeds
    assert {c.doc_id for c in load_index(tmp_settings.index_dir).chunks} == {"a.txt", "b.txt"}


def test_damaged_index_is_named(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    (current_build(tmp_settings.index_dir) / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(StaleIndex, match="damaged.*--rebuild"):
        load_index(tmp_settings.index_dir)
    assert build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False).rebuilt


def test_bad_inputs_are_skipped_with_messages_and_never_corrupt(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02GGUF\x00")
    (corpus / "latin.txt").write_bytes("Titre\nCaf\u00e9".encode("latin-1"))
    write(corpus / "copy.txt", ARTICLE_A)
    big = tmp_settings.replace(max_file_mb=0.001)
    write(corpus / "big.txt", "Big\n" + "x " * 2000)
    report = build_index([corpus], tmp_settings.index_dir, big, progress=False)
    messages = "\n".join(report.skipped)
    for expected in ["empty.txt: no text", "binary.txt: looks like a binary", "latin.txt: not UTF-8",
                     "copy.txt: duplicate of a.txt", "big.txt: 0.0 MB is larger"]:
        assert expected in messages
    assert {c.doc_id for c in load_index(tmp_settings.index_dir).chunks} == {"a.txt"}


def test_empty_corpus_fails_cleanly_and_keeps_index(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    before = current_build(tmp_settings.index_dir)
    (corpus / "a.txt").unlink()
    with pytest.raises(IndexBuildError, match="nothing to index.*no .txt, .md"):
        build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert current_build(tmp_settings.index_dir) == before


def test_hnsw_index_type(tmp_settings):
    corpus = tmp_settings.corpus_dir
    write(corpus / "seed.txt", SEED_ARTICLE.read_text())
    settings = tmp_settings.replace(index_type="hnsw")
    build_index([corpus], settings.index_dir, settings, progress=False)
    loaded = load_index(settings.index_dir)
    assert isinstance(loaded.store.index, faiss.IndexHNSWFlat)
    with pytest.raises(StaleIndex, match="unknown index_type"):
        build_index([corpus], settings.index_dir, settings.replace(index_type="ivf-magic"), progress=False)


def test_auto_index_type_switches_to_hnsw_at_its_size(tmp_settings):
    corpus = tmp_settings.corpus_dir
    write(corpus / "seed.txt", SEED_ARTICLE.read_text())
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    small = load_index(tmp_settings.index_dir)
    assert tmp_settings.index_type == "auto" and isinstance(small.store.index, faiss.IndexFlatIP)
    assert small.manifest["store"]["index_type"] == "flat"
    switched = tmp_settings.replace(hnsw_from_passages=len(small.chunks))
    assert build_index([corpus], switched.index_dir, switched, progress=False).rebuilt
    large = load_index(switched.index_dir)
    assert isinstance(large.store.index, faiss.IndexHNSWFlat) and large.manifest["store"]["index_type"] == "hnsw"
    query = large.vectors[3]
    assert large.store.search(query, 1)[0][0] == small.store.search(query, 1)[0][0] == 3


def test_an_interrupted_build_resumes_without_embedding_finished_documents(tmp_settings, tmp_path, monkeypatch):
    from rag.models.embedders import get_embedder

    settings = tmp_settings.replace(embed_batch_size=1)  # groups of 8 chunks, embedded 1 a call, each saved whole
    for n in range(12):
        write(settings.corpus_dir / f"d{n:02}.txt", f"Report {n}\nItem {n} sold {n * 7} units in {2000 + n}.\n")
    embedder = get_embedder(settings)
    real_embed, calls = type(embedder).embed, []

    def power_cut_in_the_second_group(self, texts, progress=False):
        calls.append(len(texts))
        if len(calls) == 9:  # the second group's first batch
            raise KeyboardInterrupt("power cut while embedding")
        return real_embed(self, texts, progress)

    monkeypatch.setattr(type(embedder), "embed", power_cut_in_the_second_group)
    with pytest.raises(KeyboardInterrupt):
        build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    monkeypatch.undo()
    assert current_build(settings.index_dir) is None and calls == [1] * 9
    report = build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    assert len(report.resumed) == 8 and report.embedded_chunks == 4 and report.chunks == 12
    assert "interrupted run" in report.summary()
    assert not (settings.index_dir / "pending").exists()
    clean_dir = tmp_path / "clean-index"
    build_index([settings.corpus_dir], clean_dir, settings, progress=False)
    resumed, clean = load_index(settings.index_dir), load_index(clean_dir)
    assert [c.text for c in resumed.chunks] == [c.text for c in clean.chunks]
    assert np.allclose(resumed.vectors, clean.vectors, atol=1e-5)


def _index_env(settings) -> dict:
    from tests.conftest import child_env

    return child_env(RAG_INDEX_STATES="false", RAG_INDEX_DIR=str(settings.index_dir),
                     RAG_CORPUS_DIR=str(settings.corpus_dir))


def _many_articles(settings, count: int) -> None:
    sentences = SEED_ARTICLE.read_text().split(". ")
    for n in range(count):
        write(settings.corpus_dir / f"n{n:03}.txt", f"Note {n}\n" + ". ".join(sentences[n % 7:n % 7 + 12]) + ".\n")


@pytest.mark.slow
def test_rag_index_killed_at_any_moment_leaves_a_working_index(tmp_settings):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    _many_articles(tmp_settings, 60)
    wanted = {p.name for p in corpus.iterdir()}
    killed_at = []
    for delay in (0.5, 2, 4, 6, 8, 10, 12, 15):
        process = subprocess.Popen([sys.executable, "-m", "rag.cli", "index"], cwd=REPO, env=_index_env(tmp_settings),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed_at.append(delay)
        process.wait()
        index = load_index(tmp_settings.index_dir)  # never damaged: the previous build or the complete new one
        assert set(index.documents) in ({"a.txt"}, wanted)
        assert index.store.search(np.asarray(index.vectors[0]), 1)[0][0] == 0
        if set(index.documents) == wanted:
            break
    print(f"rag index killed after {killed_at} s")
    assert killed_at, "no run was interrupted: the kill points did not cover the build"
    report = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert set(load_index(tmp_settings.index_dir).documents) == wanted and report.chunks >= len(wanted)
    assert not list((tmp_settings.index_dir / "builds").glob(".tmp-*"))
    assert not (tmp_settings.index_dir / "pending").exists()


@pytest.mark.slow
def test_two_rag_index_at_once_take_turns(tmp_settings):
    import subprocess
    import sys

    from tests.conftest import REPO

    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B)
    _many_articles(tmp_settings, 20)
    runs = [subprocess.Popen([sys.executable, "-m", "rag.cli", "index"], cwd=REPO, env=_index_env(tmp_settings),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = sorted(out for out, _ in outputs)
    assert any("up to date" in s for s in summaries) and any("rebuilt" in s for s in summaries), summaries
    index = load_index(tmp_settings.index_dir)
    assert set(index.documents) == {p.name for p in corpus.iterdir()}
    assert len(list((tmp_settings.index_dir / "builds").iterdir())) == 1


def _damage_manifest(build):
    (build / "manifest.json").write_text('{"fingerprint": {"format": 1', encoding="utf-8")


def _drop_a_chunk_row(build):
    lines = (build / "chunks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (build / "chunks.jsonl").write_text("".join(lines[:-1]), encoding="utf-8")


def _vectors_of_another_dimension(build):
    rows = len(np.load(build / "vectors.npy"))
    np.save(build / "vectors.npy", np.ones((rows, 128), dtype=np.float32), allow_pickle=False)


def _truncate_faiss(build):
    data = (build / "index.faiss").read_bytes()
    (build / "index.faiss").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_damage_manifest, _drop_a_chunk_row, _vectors_of_another_dimension,
                                    _truncate_faiss], ids=lambda f: f.__name__.strip("_"))
def test_a_corrupt_build_is_named_and_rebuilt_never_used(tmp_settings, damage):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    damage(current_build(tmp_settings.index_dir))
    with pytest.raises(StaleIndex, match="rebuild"):
        load_index(tmp_settings.index_dir)
    assert build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False).rebuilt
    index = load_index(tmp_settings.index_dir)
    assert set(index.documents) == {"a.txt", "b.txt"} and index.vectors.shape[1] == index.manifest["dim"]


def test_an_index_built_by_another_embedder_is_not_used(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    build = current_build(tmp_settings.index_dir)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["fingerprint"]["embedder"] = "some-other-embedder"
    (build / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleIndex, match="other settings.*embedder"):
        check_index(tmp_settings.index_dir, tmp_settings, load_corpus([corpus], tmp_settings)[0])
    assert build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False).rebuilt


# ---------------------------------------------------------------- hostile uploads, listing and deleting articles


def test_the_default_embedder_indexes_with_its_own_precision_and_chunk_sizes(tmp_path):
    settings = make_settings(tmp_path, embedder=DEFAULT_EMBEDDER)
    write(settings.corpus_dir / "seed.txt", SEED_ARTICLE.read_text(encoding="utf-8"))
    build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    index = load_index(settings.index_dir)
    fingerprint = index.manifest["fingerprint"]
    assert (fingerprint["embedder"], index.manifest["dim"]) == ("embeddinggemma", 768)
    assert fingerprint["embedder_precision"] == "bfloat16"
    assert (fingerprint["chunk_tokens"], fingerprint["chunk_overlap_tokens"]) == (240, 48)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-4)  # renormalised in float32


# Two builds in one process (so the model, the libraries and the allocator's arenas are the same for both):
# prints the process's peak RSS after each, in MB.
TWO_BUILDS = """
import json, sys
from pathlib import Path
from tools.bench_scale import SEED, synthetic_corpus
from rag.indexing.build import build_index
from rag.models.embedders import bound_index_memory
from rag.settings import load_settings

bound_index_memory()  # as `rag index` does
work = Path(sys.argv[1])
settings = load_settings(config_file=None, embedder="minilm", index_states=False)
peaks = []
for n in (200, 1200):
    synthetic_corpus(work / f"corpus{n}", n, SEED)
    build_index([work / f"corpus{n}"], work / f"index{n}", settings, progress=False)
    peaks.append(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024)
print(json.dumps(peaks))
"""


@pytest.mark.slow
def test_index_memory_is_bounded_by_its_batches_not_by_the_corpus(tmp_path):
    """A build of 200 one-chunk articles, then one of 1,200, in one new process: the second raises the peak RSS
    only by what grows with the corpus by design (the FAISS index's 1.5 KB a passage, a few hundred bytes of
    manifest a document: a few MB) and the second build's own first-time costs (measured: +21-22 MB),
    not by the articles' chunks and vectors, which are streamed to disk (held in memory, they added about 46 KB a
    passage: 46 MB more here). Before glibc's mmap threshold was fixed (rag.models.embedders.bound_index_memory) the
    heap's fragmentation alone moved this by up to 95 MB from run to run."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", TWO_BUILDS, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    small, large = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"peak RSS after 200 articles {small} MB, then 1,200 articles {large} MB")
    assert large - small <= 40, (small, large)
