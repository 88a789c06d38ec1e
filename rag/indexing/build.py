"""The on-disk index: chunks, vectors and a vector store behind a manifest; incremental builds swapped in atomically
(uploads and deletions from the chat page: rag/indexing/articles.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.arguments import PathArg, optional_path
from rag.calibration import COPY_PERMS, COPY_SHINGLE_WORDS, COPY_THRESHOLD
from rag.errors import BadInput, Unavailable
from rag.files import fsync_folder, remove_stale_partials, write_bytes_atomically, write_text_atomically
from rag.indexing.bm25 import BM25Stage, write_bm25
from rag.indexing.copies import article_copies, copies_summary, copy_groups, signature_name, signatures
from rag.indexing.distributed import EMBED_GROUP_BATCHES
from rag.indexing.progress import Tracker, tracker_for
from rag.indexing.stores import (
    BACKENDS,
    VectorStore,
    VectorStoreError,
    drop_stale,
    finish_swap,
    open_store,
    release_pages,
    write_store,
)
from rag.ingest.chunking import chunk_document, chunking
from rag.ingest.reading import READER_VERSION, IngestError, find_articles, read_article_bytes, read_document
from rag.models.embedders import Embedder, LlamaEmbedder, embedder_precision, get_embedder
from rag.settings import Settings
from rag.types import Chunk, Document, IndexReport, ProgressCallback

FORMAT_VERSION = 1  # a build without a "store" entry has an index.faiss: still readable
CURRENT = "CURRENT"
PENDING = "pending"
COPY_BATCH = 4096  # chunks copied at a time from the previous build
INDEX_TYPES = ("auto", "flat", "hnsw")


class IndexBuildError(BadInput, RuntimeError):
    """Nothing usable to index (no articles, every file rejected); the previous index is untouched."""


class StaleIndex(Unavailable, RuntimeError):
    """The index on disk does not match the settings or the articles; the message says how to fix it."""


@dataclass
class LoadedIndex:
    folder: Path  # the build folder
    manifest: dict
    chunks: list[Chunk]  # chunk.id == row in `vectors` and id in `store`
    vectors: np.ndarray
    store: VectorStore
    lexical: BM25Stage | None = None  # the saved BM25 index, memory-mapped; None for builds older than it
    # per chunk row, its near-copy group: the smallest row it was folded with (rag/indexing/copies.py); each row its
    # own group for a build older than copies.npy
    copy_group: np.ndarray = field(default=None)  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        if self.copy_group is None:
            self.copy_group = np.arange(len(self.chunks), dtype=np.int64)

    @property
    def build_id(self) -> str:
        return self.folder.name

    @property
    def documents(self) -> dict[str, dict]:
        return self.manifest["documents"]


def index_folder(settings: Settings, corpus: PathArg | None = None) -> Path:
    """The main corpus indexes into `index_dir`; any other corpus into its own folder under it."""
    corpus = optional_path(corpus, "corpus") or settings.corpus_dir
    if corpus.resolve() == settings.corpus_dir.resolve():
        return settings.index_dir
    digest = hashlib.sha1(str(corpus.resolve()).encode()).hexdigest()[:10]
    return settings.index_dir / "corpora" / f"{corpus.resolve().name}-{digest}"


def fingerprint(settings: Settings) -> dict:
    """What the vectors and chunks depend on: any change forces a full rebuild. Near-copy signatures and groups
    (minhash.npy, copies.npy) are not in it: a build without them stays valid and folds nothing until the next
    build, which makes them (the manifest's "copies" entry says which signatures a build holds)."""
    precision = embedder_precision(settings)  # named only when not float32: float32 indexes stay valid
    chunk_tokens, overlap_tokens = chunking(settings)
    return {"format": FORMAT_VERSION, "reader": READER_VERSION, "embedder": settings.embedder,
            **({"embedder_precision": precision} if precision != "float32" else {}),
            **({"embedder_backend": settings.embedder_backend} if settings.embedder_backend != "torch" else {}),
            "chunk_tokens": chunk_tokens, "chunk_overlap_tokens": overlap_tokens,
            "index_type": settings.index_type, "vector_store": settings.vector_store,
            **({"hnsw_from_passages": settings.hnsw_from_passages} if settings.index_type == "auto" else {}),
            **({"milvus_uri": settings.milvus_uri} if settings.vector_store == "milvus" else {})}


# ---------------------------------------------------------------- reading the corpus


@dataclass(frozen=True)
class ArticleFile:
    """An article file found in the corpus, known by its bytes' SHA-256 before it is parsed."""

    path: str  # not a Path: a million of them would hold several strings each
    doc_id: str
    sha256: str


def scan_corpus(paths: Iterable[Path], settings: Settings) -> tuple[list[ArticleFile], list[str]]:
    """Every article file under `paths` with its identity, and a message for every file skipped (and why): too
    large, unreadable, a duplicate. Files are hashed, not parsed: only new or changed ones are read as articles."""
    paths = list(paths)
    files: list[ArticleFile] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    roots = [p for p in paths if p.is_dir()]
    for path in find_articles(paths):
        root = next((r for r in roots if path.is_relative_to(r)), path.parent)
        doc_id = path.relative_to(root).as_posix()
        try:
            sha256 = hashlib.sha256(read_article_bytes(path, settings.max_file_mb)).hexdigest()
        except IngestError as exc:
            skipped.append(str(exc))
            continue
        if sha256 in seen:
            skipped.append(f"{path}: duplicate of {seen[sha256]}, skipped")
            continue
        seen[sha256] = doc_id
        files.append(ArticleFile(str(path), doc_id, sha256))
    return files, skipped


def load_corpus(paths: Iterable[Path], settings: Settings) -> tuple[list[Document], list[str]]:
    """Documents under `paths`, parsed, and a message for every file that was skipped (and why)."""
    files, skipped = scan_corpus(paths, settings)
    documents = list(_read_articles(files, settings, skipped))
    return documents, skipped


def _read_articles(files: Iterable[ArticleFile], settings: Settings, skipped: list[str],
                   tracker: Tracker | None = None) -> Iterator[Document]:
    tracker = tracker or Tracker()
    for file in files:
        try:
            document = read_document(Path(file.path), file.doc_id, settings.max_file_mb)
        except IngestError as exc:
            skipped.append(str(exc))
            tracker.read(readable=False)
            continue
        tracker.read()
        yield document


# ---------------------------------------------------------------- building


def build_index(paths: Iterable[Path], folder: Path, settings: Settings, rebuild: bool = False,
                progress: bool | ProgressCallback = True, ray: str | None = None) -> IndexReport:
    """Index the articles under `paths` into `folder`, re-embedding only new or changed documents. `ray` (an
    address, or "local") embeds on a Ray cluster instead of in this process (rag/indexing/distributed.py).
    `progress`: True shows the run's progress on stderr (rag.indexing.progress.ProgressLine), False nothing; a
    callable is told each step (rag.types.IndexProgress: stage, documents and chunks done, the time left)."""
    started = time.perf_counter()
    tracker = tracker_for(progress)
    with tracker:
        tracker.stage("scanning")
        paths = list(paths)
        files, skipped = scan_corpus(paths, settings)
        if not files:
            raise _nothing_to_index(paths, skipped)
        report = sync_index(files, folder, settings, rebuild=rebuild, progress=tracker, ray=ray, paths=paths)
    report.skipped = skipped + report.skipped
    report.seconds = time.perf_counter() - started
    return report


def _nothing_to_index(paths: list[Path], skipped: list[str]) -> IndexBuildError:
    reasons = "; ".join(skipped) if skipped else "no .txt, .md, .html or .pdf files found"
    return IndexBuildError(f"nothing to index in {', '.join(map(str, paths))}: {reasons}")


def sync_index(files: list[ArticleFile], folder: Path, settings: Settings, rebuild: bool = False,
               progress: bool | ProgressCallback | Tracker = True, ray: str | None = None,
               paths: list[Path] | None = None) -> IndexReport:
    """Make the index in `folder` hold exactly the articles in `files`; writes a new build only when something
    changed. The build is streamed: unchanged documents' chunks and vectors are copied from the previous build,
    new ones are embedded a group at a time, and both are written to disk as they come, so memory holds one group
    (about EMBED_GROUP_BATCHES x embed_batch_size chunks), not the corpus. `progress` as in `build_index`: each
    document read and each batch embedded is told."""
    if settings.index_type not in INDEX_TYPES:
        raise StaleIndex(f"unknown index_type {settings.index_type!r}: use one of {', '.join(INDEX_TYPES)}")
    if settings.vector_store not in BACKENDS:
        raise StaleIndex(f"unknown vector_store {settings.vector_store!r}: use one of {', '.join(BACKENDS)}")
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tracker = tracker_for(progress)
    embedder = get_embedder(settings)
    with tracker, FileLock(str(folder / ".lock")):
        wanted_fp = fingerprint(settings)
        old = None if rebuild else _compatible_build(folder, wanted_fp)
        old_docs = old[1]["documents"] if old else {}
        report = IndexReport(documents=len(files), rebuilt=old is None)
        report.removed = sorted(set(old_docs) - {f.doc_id for f in files})
        keep = {f.doc_id for f in files if old_docs.get(f.doc_id, {}).get("sha256") == f.sha256}
        fresh = [f for f in files if f.doc_id not in keep]
        report.added = [f.doc_id for f in fresh if f.doc_id not in old_docs]
        report.updated = [f.doc_id for f in fresh if f.doc_id in old_docs]
        if old and not report.changed:
            finish_swap(settings, folder, old[0])  # deletes a kill after the last swap left undone (Milvus)
            report.chunks = int(old[1]["counts"]["chunks"])
            report.seconds = time.perf_counter() - started
            return report
        tracker.plan(len(fresh))
        tracker.stage("loading")
        embedder.warm_up()  # loading the model is not embedding speed
        pending = Pending(folder / PENDING, wanted_fp)
        with BuildWriter(folder, old) as writer:
            if old:
                if keep:
                    tracker.stage("copying")
                writer.carry_over(*old, keep)
            tracker.stage("embedding")
            embed_started = time.perf_counter()
            documents = _read_articles(fresh, settings, report.skipped, tracker)
            for document, chunks, vectors in pending.embed(documents, settings, tracker, ray, report):
                writer.add(document, chunks, vectors)
            report.embed_seconds = time.perf_counter() - embed_started
            _drop_unreadable(report, {f.doc_id for f in fresh} - writer.fresh, old_docs)
            if not writer.documents:
                raise _nothing_to_index(paths or [folder], report.skipped)
            tracker.stage("writing")
            report.chunks = writer.commit(settings, wanted_fp)
        pending.clear()  # what it held is in the build now
        report.seconds = time.perf_counter() - started
        tracker.finish()
        return report


def _drop_unreadable(report: IndexReport, unreadable: set[str], old_docs: dict) -> None:
    """New or changed files that could not be parsed are not in the build (report.skipped says why)."""
    report.documents -= len(unreadable)
    report.added = [d for d in report.added if d not in unreadable]
    report.updated = [d for d in report.updated if d not in unreadable]
    report.removed = sorted({*report.removed, *(d for d in unreadable if d in old_docs)})


class BuildWriter:
    """A build written as it is produced, into a hidden folder under `builds/`: chunks appended to chunks.jsonl
    and vectors to vectors.npy (row = chunk id), then the vector store and the BM25 index filled from those files
    in batches, then swapped in with two atomic renames. Leaving the `with` block without `commit` (an error, a
    kill) leaves the previous build current and the hidden folder is removed."""

    def __init__(self, folder: Path, previous: tuple[Path, dict] | None) -> None:
        self.folder = folder
        self.previous = previous
        builds = folder / "builds"
        builds.mkdir(exist_ok=True)
        self.build_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.tmp = builds / f".tmp-{self.build_id}"
        self.tmp.mkdir()
        self._chunks = open(self.tmp / "chunks.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed in commit
        self._vectors: NpyWriter | None = None
        self._signatures = NpyWriter(self.tmp / "minhash.npy", COPY_PERMS, dtype="<u4")  # near-copies: copies.py
        self.sizes = array("q")  # per row: the chunk's length, what article_copies weighs passages by
        self.doc_ids: list[str] = []  # per row: one shared string per document
        self.keys = array("q")  # per row: the chunk's key, kept across builds (new chunks get the next ones)
        self.next_key = _next_key(previous[1]) if previous else 0
        self.documents: dict[str, dict] = {}
        self.fresh: set[str] = set()

    def __enter__(self) -> BuildWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._chunks.close()
        if self._vectors is not None:
            self._vectors.close()
        self._signatures.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, document: Document, chunks: list[Chunk], vectors: np.ndarray) -> None:
        self.documents[document.doc_id] = {"sha256": document.sha256, "title": document.title,
                                           "path": document.path, "meta": document.meta, "chunks": len(chunks),
                                           "published": document.published, "outlet": document.outlet}
        self.fresh.add(document.doc_id)
        numbered = [{**c.to_dict(), "key": self.next_key + n} for n, c in enumerate(chunks)]
        self.next_key += len(chunks)
        self._append(numbered, vectors, signatures([c.text for c in chunks]))

    def carry_over(self, build: Path, manifest: dict, keep: set[str]) -> None:
        """Copy the chunks, vectors and signatures of the documents in `keep` from a previous build, in its order, in
        batches."""
        old_vectors = np.load(build / "vectors.npy", mmap_mode="r", allow_pickle=False)
        old_signatures = _signatures(build, manifest)
        batch: list[tuple[int, dict]] = []
        with open(build / "chunks.jsonl", encoding="utf-8") as handle:
            for row, line in enumerate(handle):
                data = json.loads(line)
                if data["doc_id"] in keep:
                    self.documents.setdefault(data["doc_id"], manifest["documents"][data["doc_id"]])
                    data["key"] = data.get("key", row)  # a build from before keys: its rows were its keys
                    batch.append((row, data))
                if len(batch) >= COPY_BATCH:
                    self._copy(batch, old_vectors, old_signatures)
                    batch = []
        self._copy(batch, old_vectors, old_signatures)

    def _copy(self, batch: list[tuple[int, dict]], old_vectors: np.ndarray, old_signatures: np.ndarray | None
              ) -> None:
        """`old_signatures` None: the previous build has none (or other ones), they are made from the texts."""
        if batch:
            rows = [row for row, _ in batch]
            chunks = [data for _, data in batch]
            minhashes = (signatures([data["text"] for data in chunks]) if old_signatures is None
                         else np.asarray(old_signatures[rows]))
            self._append(chunks, np.asarray(old_vectors[rows]), minhashes)
            release_pages(old_vectors)
            if old_signatures is not None:
                release_pages(old_signatures)

    def _append(self, chunks: list[dict], vectors: np.ndarray, minhashes: np.ndarray) -> None:
        if self._vectors is None:
            self._vectors = NpyWriter(self.tmp / "vectors.npy", vectors.shape[1])
        for data in chunks:
            data["id"] = len(self.doc_ids)
            self.keys.append(data["key"])
            self._chunks.write(json.dumps(data, ensure_ascii=False) + "\n")
            same = self.doc_ids and self.doc_ids[-1] == data["doc_id"]
            self.doc_ids.append(self.doc_ids[-1] if same else data["doc_id"])  # one string per document
            self.sizes.append(len(data["text"]))
        self._vectors.append(vectors)
        self._signatures.append(minhashes)

    def commit(self, settings: Settings, wanted_fp: dict) -> int:
        """Fill the vector store and BM25 from the written files, write the manifest, swap the build in; returns
        the number of chunks."""
        self._chunks.close()
        dim = self._vectors.close()
        self._signatures.close()
        vectors = np.load(self.tmp / "vectors.npy", mmap_mode="r", allow_pickle=False)
        copies = self._fold()  # names each document's copies in its entry
        manifest = {
            "fingerprint": wanted_fp,
            "dim": dim,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "documents": self.documents,
            "counts": {"documents": len(self.documents), "chunks": len(self.doc_ids)},
            "next_key": self.next_key,
            "copies": copies,
        }
        keys = np.frombuffer(self.keys, dtype=np.int64)
        manifest["store"] = write_store(settings, self.folder, self.tmp, self.build_id, vectors, self.doc_ids, keys,
                                        self.previous)
        manifest["lexical"] = write_bm25(_titles_and_texts(self.tmp / "chunks.jsonl"), self.tmp)
        del vectors
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        _fsync_tree(self.tmp)
        builds = self.folder / "builds"
        os.replace(self.tmp, builds / self.build_id)
        fsync_folder(builds)  # the build's name is on disk before CURRENT names it
        write_text_atomically(self.folder / CURRENT, self.build_id)
        for stale in builds.iterdir():
            if stale.name != self.build_id:
                shutil.rmtree(stale, ignore_errors=True)
        remove_stale_partials(self.folder)  # a killed writer's CURRENT (or Milvus state file) half written
        drop_stale(settings, self.folder, self.build_id)
        return len(self.doc_ids)

    def _fold(self) -> dict:
        """Group near-copy passages (copies.npy) and name each document's near-copies in its manifest entry; the
        manifest's "copies" entry."""
        minhashes = np.load(self.tmp / "minhash.npy", mmap_mode="r", allow_pickle=False)
        groups = copy_groups(minhashes, COPY_THRESHOLD)
        del minhashes
        np.save(self.tmp / "copies.npy", groups, allow_pickle=False)
        named = article_copies(self.doc_ids, groups, sizes=self.sizes)
        self.documents = {doc: {**entry, "copies": named.get(doc, [])} for doc, entry in self.documents.items()}
        return {"threshold": COPY_THRESHOLD, "perms": COPY_PERMS, "shingle_words": COPY_SHINGLE_WORDS,
                "signature": signature_name(), **copies_summary(groups)}


def _signatures(build: Path, manifest: dict) -> np.ndarray | None:
    """A previous build's near-copy signatures (memory-mapped) when it holds ones made as this build makes them;
    None for a build from before them or with others."""
    if manifest.get("copies", {}).get("signature") != signature_name():
        return None
    try:
        minhashes = np.load(build / "minhash.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    expected = (int(manifest["counts"]["chunks"]), COPY_PERMS)
    return minhashes if minhashes.shape == expected and minhashes.dtype == np.uint32 else None


def _next_key(manifest: dict) -> int:
    """The first key a build after this one gives a new chunk (a build from before keys: its chunk count)."""
    return int(manifest.get("next_key", manifest["counts"]["chunks"]))


def _titles_and_texts(chunks_path: Path) -> Iterator[tuple[str, str]]:
    with open(chunks_path, encoding="utf-8") as handle:
        for line in handle:
            data = json.loads(line)
            yield data["title"], data["text"]


class NpyWriter:
    """A .npy file of `dim` columns (float32 unless `dtype` says otherwise) written a block of rows at a time: a
    fixed-size header is written first and rewritten with the final row count on close, so no row is held in
    memory."""

    HEADER_BYTES = 128  # magic, version, length and the padded dictionary: a multiple of 64 as numpy writes

    def __init__(self, path: Path, dim: int, dtype: str = "<f4") -> None:
        self.path = path
        self.dim = dim
        self.dtype = dtype
        self.rows = 0
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._handle.write(self._header())

    def _header(self) -> bytes:
        described = f"{{'descr': '{self.dtype}', 'fortran_order': False, 'shape': ({self.rows}, {self.dim}), }}"
        padded = described.ljust(self.HEADER_BYTES - 10 - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded.encode("latin1")

    def append(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of shape {vectors.shape} in a file of {self.dim} columns")
        self._handle.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        self.rows += len(vectors)

    def close(self) -> int:
        """Write the final header; returns the number of columns."""
        if not self._handle.closed:
            self._handle.seek(0)
            self._handle.write(self._header())
            self._handle.close()
        return self.dim


class Pending:
    """Documents embedded by a run that has not finished: each group of documents is saved to `pending/` as soon
    as it is embedded, so that a run interrupted after hours of embedding resumes where it stopped. Entries are
    keyed by the index fingerprint and the document's content; the folder is emptied once a build is swapped in.
    The embedder sees one group at a time (about EMBED_GROUP_BATCHES x embed_batch_size chunks)."""

    def __init__(self, folder: Path, fingerprint: dict) -> None:
        self.folder = folder
        self.fingerprint = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    def embed(self, documents: Iterable[Document], settings: Settings, tracker: Tracker, ray: str | None,
              report: IndexReport) -> Iterator[tuple[Document, list[Chunk], np.ndarray]]:
        """Each document with its chunks and vectors, in order (with Ray: those taken from an earlier run first);
        report.resumed and report.embedded_chunks say which were taken from an earlier run and how many chunks
        were embedded now; `tracker` is told each document's chunks and each batch embedded (with Ray, each
        document)."""
        if ray:
            from rag.indexing.distributed import ray_embedded

            todo: list[Document] = []
            for document in documents:
                saved = self._load(document)
                if saved is None:
                    todo.append(document)
                    continue
                report.resumed.append(document.doc_id)
                tracker.chunked(len(saved[0]), done=True)
                yield document, *saved
            for document, chunks, vectors in ray_embedded(todo, settings, ray):
                self._save(document, chunks, vectors)
                report.embedded_chunks += len(chunks)
                tracker.chunked(len(chunks))
                tracker.embedded(len(chunks))
                yield document, chunks, vectors
            return
        for group in self._groups(documents, settings, report, tracker):
            yield from group

    def _groups(self, documents: Iterable[Document], settings: Settings, report: IndexReport, tracker: Tracker
                ) -> Iterator[list[tuple[Document, list[Chunk], np.ndarray]]]:
        """Groups of documents in order, each embedded once about EMBED_GROUP_BATCHES batches of new chunks
        are waiting."""
        embedder = get_embedder(settings)
        group: list[tuple[Document, list[Chunk], np.ndarray | None]] = []
        waiting = 0
        for document in documents:
            saved = self._load(document)
            if saved is not None:
                report.resumed.append(document.doc_id)
                tracker.chunked(len(saved[0]), done=True)
                group.append((document, *saved))
                continue
            chunks = chunk_document(document, embedder.count_tokens, *chunking(settings))
            tracker.chunked(len(chunks))
            group.append((document, chunks, None))
            waiting += len(chunks)
            if waiting >= EMBED_GROUP_BATCHES * settings.embed_batch_size:
                yield self._embedded(group, embedder, settings, report, tracker)
                group, waiting = [], 0
        if group:
            yield self._embedded(group, embedder, settings, report, tracker)

    def _embedded(self, group: list, embedder: Embedder | LlamaEmbedder, settings: Settings, report: IndexReport,
                  tracker: Tracker) -> list[tuple[Document, list[Chunk], np.ndarray]]:
        texts = [c.text for _, chunks, vectors in group if vectors is None for c in chunks]
        embedded = _embed_batches(texts, embedder, settings.embed_batch_size, tracker)
        report.embedded_chunks += len(texts)
        done, row = [], 0
        for document, chunks, vectors in group:
            if vectors is None:
                vectors = embedded[row:row + len(chunks)]
                row += len(chunks)
                self._save(document, chunks, vectors)
            done.append((document, chunks, vectors))
        return done

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _paths(self, document: Document) -> tuple[Path, Path]:
        key = hashlib.sha256(f"{self.fingerprint}:{document.doc_id}:{document.sha256}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.npy", self.folder / f"{key}.jsonl"

    def _load(self, document: Document) -> tuple[list[Chunk], np.ndarray] | None:
        vectors_path, chunks_path = self._paths(document)
        try:
            vectors = np.load(vectors_path, allow_pickle=False)
            chunks = [Chunk.from_dict(json.loads(line)) for line in chunks_path.read_text("utf-8").splitlines()]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not there, or damaged: embed it again
        return (chunks, vectors) if len(chunks) == len(vectors) else None

    def _save(self, document: Document, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Vectors first, chunks last: the chunks file is what says the entry is complete (both atomic)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        vectors_path, chunks_path = self._paths(document)
        buffer = io.BytesIO()
        np.save(buffer, vectors, allow_pickle=False)
        # not synced, as before: an entry torn by a power loss fails to load and is embedded again
        write_bytes_atomically(vectors_path, buffer.getvalue(), fsync=False)
        lines = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in chunks)
        write_bytes_atomically(chunks_path, lines.encode("utf-8"), fsync=False)


def _embed_batches(texts: list[str], embedder: Embedder | LlamaEmbedder, size: int, tracker: Tracker
                   ) -> np.ndarray:
    """The texts' vectors, embedded one batch of `size` at a time so that `tracker` is told after each. The batches
    are the ones sentence-transformers makes of a whole call (the texts longest first, the least padding), so
    embedding a group this way costs what one call for it did."""
    if not texts:
        return np.zeros((0, embedder.dim), np.float32)
    order = np.argsort([-len(text) for text in texts], kind="stable")
    size = max(1, size)
    vectors: np.ndarray | None = None
    for start in range(0, len(texts), size):
        rows = order[start:start + size]
        batch = embedder.embed([texts[row] for row in rows])
        if vectors is None:
            vectors = np.empty((len(texts), batch.shape[1]), np.float32)
        vectors[rows] = batch
        tracker.embedded(len(rows))
    assert vectors is not None
    return vectors


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


# ---------------------------------------------------------------- loading


def current_build(folder: Path) -> Path | None:
    try:
        build = folder / "builds" / (folder / CURRENT).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return build if build.is_dir() else None


def current_manifest(folder: Path) -> tuple[Path, dict]:
    """The current build of `folder` and its manifest (without its chunks and vectors); StaleIndex when there is
    none or the manifest is damaged."""
    build = current_build(folder)
    if build is None:
        raise StaleIndex(f"no index in {folder}: run `rag index`")
    try:
        manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
        return build, {**manifest, "documents": dict(manifest["documents"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StaleIndex(f"index in {build} is damaged ({exc}): run `rag index --rebuild`") from exc


def load_index(folder: Path) -> LoadedIndex:
    """The current build of `folder`; StaleIndex when there is none or it is damaged."""
    build, manifest = current_manifest(folder)
    try:
        with open(build / "chunks.jsonl", encoding="utf-8") as handle:
            chunks = [Chunk.from_dict(json.loads(line)) for line in handle]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StaleIndex(f"index in {build} is damaged ({exc}): run `rag index --rebuild`") from exc
    vectors, store, lexical, copy_group = _open_build(build, manifest, len(chunks), [c.doc_id for c in chunks])
    return LoadedIndex(build, manifest, chunks, vectors, store, lexical, copy_group)


def _open_build(build: Path, manifest: dict, chunk_count: int, doc_ids: list[str]
                ) -> tuple[np.ndarray, VectorStore, BM25Stage | None, np.ndarray]:
    """A build's vectors (memory-mapped), vector store, saved BM25 index (None for a build older than saved
    indexes) and near-copy groups, checked against each other and the manifest; StaleIndex when anything is damaged
    or missing."""
    try:
        vectors = np.load(build / "vectors.npy", mmap_mode="r", allow_pickle=False)  # read rows as needed
        store = open_store(manifest.get("store", {}), build, vectors, doc_ids)
        lexical = BM25Stage.load(build, chunk_count) if "lexical" in manifest else None
        copy_group = _copy_groups(build, manifest, chunk_count)
    except VectorStoreError as exc:
        raise StaleIndex(str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise StaleIndex(f"index in {build} is damaged ({exc}): run `rag index --rebuild`") from exc
    if not (chunk_count == len(vectors) == store.size):
        raise StaleIndex(f"index in {build} is inconsistent: run `rag index --rebuild`")
    if vectors.ndim != 2 or vectors.shape[1] != manifest.get("dim"):
        raise StaleIndex(f"index in {build} holds vectors of shape {vectors.shape}, its manifest says dimension "
                         f"{manifest.get('dim')}: run `rag index --rebuild`")
    return vectors, store, lexical, copy_group


def _copy_groups(build: Path, manifest: dict, chunk_count: int) -> np.ndarray:
    """copies.npy, memory-mapped; every row its own group for a build from before it."""
    if "copies" not in manifest:
        return np.arange(chunk_count, dtype=np.int64)
    groups = np.load(build / "copies.npy", mmap_mode="r", allow_pickle=False)
    if groups.shape != (chunk_count,) or groups.dtype != np.int64:
        raise ValueError(f"copies.npy holds {groups.dtype} of shape {groups.shape} for {chunk_count} chunks")
    return groups


def _compatible_build(folder: Path, wanted_fp: dict) -> tuple[Path, dict] | None:
    """The current build and its manifest when it is sound and was built with the wanted settings, checked
    without reading its chunks into memory."""
    try:
        build, manifest = current_manifest(folder)
        with open(build / "chunks.jsonl", "rb") as handle:
            chunk_count = sum(1 for _ in handle)
        _open_build(build, manifest, chunk_count, [])
    except (StaleIndex, OSError):
        return None
    return (build, manifest) if manifest.get("fingerprint") == wanted_fp else None


def check_index(folder: Path, settings: Settings, documents: list[Document] | list[ArticleFile]
                ) -> LoadedIndex:
    """Load and verify that the index matches the settings and the articles; StaleIndex says what differs."""
    loaded = load_index(folder)
    wanted = fingerprint(settings)
    have = loaded.manifest.get("fingerprint", {})
    differs = sorted(k for k in set(wanted) | set(have) if have.get(k) != wanted.get(k))  # a key on one side only too
    if differs:
        detail = ", ".join(f"{k}: index {have.get(k)!r} vs settings {wanted.get(k)!r}" for k in differs)
        raise StaleIndex(f"index in {folder} was built with other settings ({detail}): run `rag index`")
    on_disk = {d.doc_id: d.sha256 for d in documents}
    indexed = {k: v["sha256"] for k, v in loaded.documents.items()}
    if on_disk != indexed:
        changed = sorted(set(on_disk.items()) ^ set(indexed.items()))
        names = sorted({name for name, _ in changed})
        raise StaleIndex(f"index in {folder} is out of date ({len(names)} article(s) added, changed or "
                         f"removed: {', '.join(names[:5])}): run `rag index`")
    return loaded


def open_index(settings: Settings, corpus: PathArg | None = None, progress: bool = False) -> LoadedIndex:
    """The index for a corpus, brought up to date first when `auto_index` is on (the default)."""
    corpus = optional_path(corpus, "corpus") or settings.corpus_dir
    folder = index_folder(settings, corpus)
    if settings.auto_index:
        build_index([corpus], folder, settings, progress=progress)
        return load_index(folder)
    files, _ = scan_corpus([corpus], settings)
    return check_index(folder, settings, files)
