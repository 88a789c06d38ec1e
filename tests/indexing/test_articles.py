"""Uploads, the list of articles and deletions (rag/indexing/articles.py) on the real embedder and index files: hostile
names and files, all-or-nothing changes, leftovers of a killed change finished next time."""

import re
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from rag.indexing.articles import (
    REMOVING_PREFIX,
    UPLOAD_PREFIX,
    ArticleError,
    add_articles,
    list_articles,
    remove_articles,
)
from rag.indexing.build import build_index, current_build, load_index
from tests.conftest import SEED_ARTICLE, write
from tests.indexing.test_build import ARTICLE_A, ARTICLE_B, ARTICLE_C, corpus_with

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["faiss", "milvus"])
def test_add_articles_checks_copies_and_indexes(tmp_settings, tmp_path, store):
    tmp_settings = tmp_settings.replace(vector_store=store)
    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    uploads = tmp_path / "uploads"
    good = write(uploads / "Cluster news (final).txt", ARTICLE_C)
    same_name = write(uploads / "other" / "a.txt", ARTICLE_B)
    empty = write(uploads / "empty.txt", "")
    wrong_type = write(uploads / "notes.docx", "PK fake word file")
    report = add_articles([good, same_name, empty, wrong_type], tmp_settings)
    assert sorted(p.name for p in corpus.iterdir()) == ["Cluster-news-final.txt", "a-2.txt", "a.txt"]
    assert (corpus / "a.txt").read_text() == ARTICLE_A  # an upload never overwrites a different article
    assert len(report.rejected) == 2
    assert any("empty.txt: no text" in r for r in report.rejected)
    assert any("notes.docx: unsupported file type" in r for r in report.rejected)
    index = load_index(tmp_settings.index_dir)
    assert {c.doc_id for c in index.chunks} == {"a.txt", "a-2.txt", "Cluster-news-final.txt"}
    assert index.manifest["store"]["backend"] == store and index.store.size == len(index.chunks)


def tree(folder):
    """Every file and folder under `folder` (hidden ones too) with the SHA-256 of each file's bytes."""
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_hostile_upload_names_are_sanitised_and_nothing_is_written_outside_the_corpus(tmp_settings, tmp_path):
    import uuid

    from tests.ingest.test_reading import HOSTILE_NAMES, pdf_bytes

    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    escape = f"/tmp/rag-escape-{uuid.uuid4().hex}.txt"
    names = [name for name, _ in HOSTILE_NAMES] + [escape, "a.txt", "../a.txt"]
    uploads = []
    for number, name in enumerate(names):  # every upload has its own content; "a.txt" clashes with the article
        text = f"Upload {number}\nItem {number} sold {number * 7} units in {2000 + number}.\n"
        path = write(tmp_path / "uploads" / f"{number}.tmp", text)
        if name.endswith(".pdf"):
            path.write_bytes(pdf_bytes(b"BT /F1 12 Tf 72 720 Td (%s) Tj ET\n" % text.encode()))
        uploads.append((path, name))

    def outside() -> dict[str, str]:  # the folders above the corpus, all the way through, less corpus and index
        return {k: v for k, v in tree(tmp_path.parent).items()
                if not k.startswith((f"{tmp_path.name}/corpus", f"{tmp_path.name}/index"))}

    before = outside()
    report = add_articles(uploads, tmp_settings)
    assert not report.rejected and not report.duplicates
    expected = {safe for _, safe in HOSTILE_NAMES} | {Path(escape).name, "a.txt", "a-2.txt", "a-3.txt"}
    assert {p.name for p in corpus.iterdir()} == expected  # one folder, no hidden file, nothing overwritten
    assert (corpus / "a.txt").read_text() == ARTICLE_A
    assert len(report.renamed) == len(names)  # every name changed, and the report says to what
    assert set(load_index(tmp_settings.index_dir).documents) == expected
    assert outside() == before, "something was written outside the corpus and index folders"
    assert not Path(escape).exists() and not (corpus.parent.parent / "escape.txt").exists()


def test_uploads_with_the_wrong_content_size_or_type_are_refused_or_reported(tmp_settings, tmp_path):
    import os
    import tracemalloc

    from tests.ingest.test_reading import TEXT_LINE, pdf_bytes

    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    settings = tmp_settings.replace(max_upload_mb=1)
    up = tmp_path / "uploads"
    up.mkdir()
    real_pdf = pdf_bytes(b"BT /F1 12 Tf 72 720 Td (The factory opens in 2026.) Tj ET\n")
    (up / "pdf-as-text.txt").write_bytes(real_pdf)
    write(up / "page.txt", "<html><body><h1>Chip news</h1>\n<p>Exports of chips rose 12% in May.</p></body></html>")
    write(up / "text-as.pdf", "Just text\nNot a PDF at all.\n")
    (up / "bomb.pdf").write_bytes(pdf_bytes(b" " * 100_000_000))
    (up / "pages.pdf").write_bytes(pdf_bytes(TEXT_LINE, 3_000))  # 470 KB
    with open(up / "huge {0}.txt", "wb") as handle:
        handle.truncate(2 * 1024 ** 3)  # a sparse 2 GB file: reading it whole would show in the peak below
    os.mkfifo(up / "pipe.txt")  # reading it would block forever
    write(up / "copy-of-a.txt", ARTICLE_A)
    write(up / "new.txt", ARTICLE_C)
    write(up / "new-again.txt", ARTICLE_C)
    tracemalloc.start()
    report = add_articles(sorted(up.iterdir()), settings)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    reasons = "\n".join(report.rejected)
    for expected in [r"pdf-as-text.txt: (looks like a binary file|not UTF-8)", "text-as.pdf: not a readable PDF",
                     "bomb.pdf: the PDF has a stream that inflates beyond 1 MB",
                     "pages.pdf: the PDF has more than 2,000 pages",
                     r"huge \{0\}.txt: 2048.0 MB is larger than the 1 MB limit \(setting max_upload_mb\)",
                     "pipe.txt: not a regular file"]:
        assert re.search(expected, reasons), expected
    assert len(report.rejected) == 6 and str(up) not in reasons and str(corpus) not in reasons
    assert report.duplicates == ["copy-of-a.txt: the same as a.txt, already in the corpus; not added again",
                                 "new.txt: the same as new-again.txt, already in the corpus; not added again"]
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt", "new-again.txt", "page.txt"]
    assert report.added == ["new-again.txt", "page.txt"]
    assert load_index(tmp_settings.index_dir).documents["page.txt"]["title"].startswith("<html>")  # read as text
    assert peak < 100 * 1024 * 1024, f"{peak / 1e6:.0f} MB"


@pytest.mark.parametrize("failure", [RuntimeError("the embedder crashed"), KeyboardInterrupt("power cut")],
                         ids=["error", "interrupt"])
def test_an_upload_that_fails_mid_way_leaves_corpus_and_index_as_they_were(tmp_settings, tmp_path, monkeypatch,
                                                                          failure):
    from rag.models.embedders import get_embedder

    corpus = corpus_with(tmp_settings, a=ARTICLE_A)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    corpus_before, index_before = tree(corpus), load_index(tmp_settings.index_dir)
    uploads = [write(tmp_path / "up" / "b.txt", ARTICLE_B), write(tmp_path / "up" / "c.txt", ARTICLE_C)]

    def crash(self, texts, progress=False):
        raise failure

    monkeypatch.setattr(type(get_embedder(tmp_settings)), "embed", crash)
    with pytest.raises(type(failure)):
        add_articles(uploads, tmp_settings)
    monkeypatch.undo()
    assert tree(corpus) == corpus_before  # the copies are gone again, no temporary file is left
    after = load_index(tmp_settings.index_dir)
    assert after.folder == index_before.folder and after.manifest == index_before.manifest
    report = add_articles(uploads, tmp_settings)  # and the same upload then succeeds
    assert report.added == ["b.txt", "c.txt"] and set(load_index(tmp_settings.index_dir).documents) == {
        "a.txt", "b.txt", "c.txt"}


@pytest.mark.parametrize("store", ["faiss", "milvus"])
def test_articles_are_listed_and_deleted_incrementally(tmp_settings, store):
    """On each vector store (Milvus Lite, embedded, for Milvus): the deleted article's passages are gone from it."""
    tmp_settings = tmp_settings.replace(vector_store=store)
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B, c=ARTICLE_C)
    write(corpus / "b.txt.meta.json", '{"date": "2024-06-03", "source": "Example News"}')
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    before = load_index(tmp_settings.index_dir)
    listed = list_articles(tmp_settings)
    assert [(a.doc_id, a.title) for a in listed] == [("b.txt", "Budget plan"), ("a.txt", "Chip exports"),
                                                     ("c.txt", "Cluster news")]
    assert listed[0].date == "2024-06-03" and listed[1].date == time.strftime("%Y-%m-%d")
    assert [a.chunks for a in listed] == [before.documents[a.doc_id]["chunks"] for a in listed]
    assert all(a.chunks >= 1 for a in listed)

    report = remove_articles(["b.txt"], tmp_settings)
    assert report.removed == ["b.txt"] and report.embedded_chunks == 0 and not report.added
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt", "c.txt"]  # the sidecar went too, nothing hidden
    after = load_index(tmp_settings.index_dir)
    assert set(after.documents) == {"a.txt", "c.txt"} and after.store.size == len(after.chunks)
    for doc_id in ("a.txt", "c.txt"):  # the other articles' vectors carried over, not embedded again
        rows = lambda index, d=doc_id: index.vectors[[c.id for c in index.chunks if c.doc_id == d]]  # noqa: E731
        assert np.array_equal(rows(before), rows(after))
    assert [a.doc_id for a in list_articles(tmp_settings)] == ["a.txt", "c.txt"]
    assert after.manifest["store"]["backend"] == store
    gone = before.vectors[[c.id for c in before.chunks if c.doc_id == "b.txt"][0]]
    found = [chunk_id for chunk_id, _ in after.store.search(np.asarray(gone), len(after.chunks))]
    assert len(found) == len(after.chunks) and {after.chunks[i].doc_id for i in found} == {"a.txt", "c.txt"}


DISAGREE = Path(__file__).resolve().parents[1] / "data" / "dated" / "disagree"
REPRINT = """Echo reprint: Norrport bridge repair bill put at $9.5 million
NORRPORT, May 4, 2024 (Daily Echo) - Repairs to the Harbor Bridge in Norrport will cost $9.5 million, according to \
a council budget document seen by Metro Wire. Trucks will be kept off the bridge for about five months while crews \
replace its steel joints. The council is due to vote on the spending next week.
"""


def test_articles_are_listed_with_their_publication_date_outlet_and_copies(tmp_settings):
    """Front matter (`date:`, `source:`) and a dateline give the publication date and outlet; a reprint of the wire
    story is listed as its near-copy."""
    import shutil

    for path in DISAGREE.iterdir():
        shutil.copy(path, tmp_settings.corpus_dir)
    write(tmp_settings.corpus_dir / "echo-reprint.txt", REPRINT)
    build_index([tmp_settings.corpus_dir], tmp_settings.index_dir, tmp_settings, progress=False)
    listed = {a.doc_id: a for a in list_articles(tmp_settings)}
    assert {d: (a.published, a.outlet) for d, a in listed.items()} == {
        "ledger-bridge.md": ("2024-05-02", "Coastal Ledger"), "other-park.md": ("2024-04-20", "Coastal Ledger"),
        "wire-bridge.txt": ("2024-05-03", "Metro Wire"), "echo-reprint.txt": ("2024-05-04", "Daily Echo")}
    assert all(a.date == a.published for a in listed.values())
    assert "echo-reprint.txt" in listed["wire-bridge.txt"].copies
    assert listed["ledger-bridge.md"].copies == [] and listed["other-park.md"].copies == []


def test_an_index_built_before_dates_were_read_lists_them_as_unknown(tmp_settings, monkeypatch):
    import rag.indexing.articles as articles

    write(tmp_settings.corpus_dir / "old.txt", ARTICLE_A)
    entries = {"old.txt": {"title": "Chip exports", "chunks": 2, "meta": {"date": "2023-03-01"}},
               "new.txt": {"title": "Bridge", "chunks": 1, "published": "2024-05-03", "outlet": "Metro Wire",
                           "copies": ["new.txt", "copy.txt"]}}
    monkeypatch.setattr(articles, "_indexed_documents", lambda folder: entries)
    new, old = list_articles(tmp_settings)  # by title
    assert (new.doc_id, new.published, new.outlet, new.copies, new.date) == (
        "new.txt", "2024-05-03", "Metro Wire", ["copy.txt"], "2024-05-03")
    assert (old.doc_id, old.published, old.outlet, old.copies, old.date) == ("old.txt", "", "", [], "2023-03-01")


@pytest.mark.parametrize("doc_ids", [["../a.txt"], ["/etc/passwd"], ["sub/../a.txt"], ["..\\a.txt"], ["a.txt\x00"],
                                     [str(SEED_ARTICLE)], ["nope.txt"], ["A.TXT"], [], "", ["a.txt", "b.txt"]],
                         ids=["parent", "absolute", "dotdot-inside", "backslash", "nul", "outside-file",
                              "unknown", "other-case", "none", "empty", "all"])
def test_deleting_refuses_bad_ids_and_the_last_article(tmp_settings, doc_ids):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    corpus_before, build_before = tree(corpus), current_build(tmp_settings.index_dir)
    with pytest.raises(ArticleError, match="nothing was deleted|no article chosen"):
        remove_articles(doc_ids, tmp_settings)
    assert tree(corpus) == corpus_before and current_build(tmp_settings.index_dir) == build_before
    assert SEED_ARTICLE.exists()


def test_a_deletion_that_fails_mid_way_changes_nothing(tmp_settings, monkeypatch):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B)
    write(corpus / "b.txt.meta.json", '{"date": "2024-06-03"}')
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    corpus_before, index_before = tree(corpus), load_index(tmp_settings.index_dir)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut while writing the FAISS file")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        remove_articles(["b.txt"], tmp_settings)
    monkeypatch.undo()
    assert tree(corpus) == corpus_before  # the article and its sidecar are back under their names
    after = load_index(tmp_settings.index_dir)
    assert after.folder == index_before.folder and set(after.documents) == {"a.txt", "b.txt"}
    assert remove_articles(["b.txt"], tmp_settings).removed == ["b.txt"]


def test_what_a_killed_upload_or_deletion_left_is_finished_next_time(tmp_settings):
    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B, c=ARTICLE_C)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    (corpus / "b.txt").rename(corpus / f"{REMOVING_PREFIX}1a2b3c4d.b.txt")  # killed before the new build: back
    write(corpus / f"{REMOVING_PREFIX}5e6f7a8b.gone.txt", "Gone\nThe index no longer holds it.\n")  # after: away
    write(corpus / f"{UPLOAD_PREFIX}{'0a' * 16}.txt", "Half\nan upload")  # killed while checking an upload: away
    write(corpus / f"{UPLOAD_PREFIX}my-notes.txt", "Mine\nnot made by an upload")  # not of that form: kept
    add_articles([], tmp_settings)
    assert sorted(p.name for p in corpus.iterdir()) == [f"{UPLOAD_PREFIX}my-notes.txt", "a.txt", "b.txt", "c.txt"]
    assert (corpus / "b.txt").read_text() == ARTICLE_B


def hidden_leftovers(corpus: Path) -> list[str]:
    return sorted(p.name for p in corpus.iterdir() if p.name.startswith((UPLOAD_PREFIX, REMOVING_PREFIX)))


def assert_corpus_and_index_agree(settings) -> None:
    """The current build holds exactly the corpus's articles, each whole, and nothing half-done is left."""
    corpus = settings.corpus_dir
    assert hidden_leftovers(corpus) == []
    assert set(load_index(settings.index_dir).documents) == {p.name for p in corpus.glob("*.txt")}


# Moments of an upload, counted in the child's os.replace calls: 1 the file is placed in the corpus, 2-3 its
# embedded chunks are saved to pending/, 4 the new build is in place, 5 CURRENT points to it; "none": timed.
UPLOAD_KILLS = [("replace:1", 0), ("replace:2", 0), ("replace:4", 0), ("replace:5", 0), ("none", 2.0),
                ("none", 4.0)]
# Moments of a deletion: rename:1 the article is set aside, replace:1 the new build is in place, replace:2
# CURRENT points to it (the set-aside file not yet deleted); "none": timed.
DELETE_KILLS = [("rename:1", 0), ("replace:1", 0), ("replace:2", 0), ("none", 3.0)]


def test_uploads_and_deletions_killed_at_any_moment_leave_whole_files_and_a_working_index(tmp_settings, tmp_path):
    """SIGKILLed at each moment: the previous or the new build loads, an article is whole or absent, and the next
    change finishes what was left (the corpus and the index then agree exactly)."""
    from tests.sigkill import Child, kill_after

    corpus = corpus_with(tmp_settings, a=ARTICLE_A, b=ARTICLE_B, c=ARTICLE_C)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    root = str(corpus.parent)
    killed = 0
    for number, (point, delay) in enumerate(UPLOAD_KILLS):
        upload = write(tmp_path / "uploads" / f"port-{number}.txt",
                       f"Port news {number}\nThe port of Mokpo handled {number + 1}0,000 tons of cargo in May.\n")
        before = set(load_index(tmp_settings.index_dir).documents)
        with Child("corpus", root, "add", str(upload), point) as child:
            killed += kill_after(child, point, delay)
        held = set(load_index(tmp_settings.index_dir).documents)  # loads: the old build or the new one
        assert before <= held <= before | {p.name for p in corpus.glob("*.txt")}, (point, held)
        placed = corpus / upload.name
        assert not placed.exists() or placed.read_bytes() == upload.read_bytes()
        if point == "replace:1":  # placed, not yet indexed: the next change indexes it
            assert placed.exists() and upload.name not in held
    for point, delay in DELETE_KILLS:
        victim = sorted(set(load_index(tmp_settings.index_dir).documents) - {"a.txt"})[0]
        with Child("corpus", root, "remove", victim, point) as child:
            killed += kill_after(child, point, delay)
        held = set(load_index(tmp_settings.index_dir).documents)
        assert (corpus / victim).exists() or victim not in held or any(
            p.name.endswith(f".{victim}") for p in corpus.iterdir())  # set aside: put back by the next change
        add_articles([], tmp_settings)  # the next change finishes what the killed one left
        assert_corpus_and_index_agree(tmp_settings)
    print(f"{killed} of {len(UPLOAD_KILLS) + len(DELETE_KILLS)} changes killed before they finished")
    assert killed >= len(UPLOAD_KILLS) + len(DELETE_KILLS) - 2  # the timed ones may finish first
    add_articles([write(tmp_path / "uploads" / "last.txt", "Last\nThe last upload is indexed whole.\n")],
                 tmp_settings)
    assert_corpus_and_index_agree(tmp_settings)
