"""The on-disk index: chunks, vectors and a vector store behind a manifest; incremental builds swapped in atomically
(uploads and deletions from the chat page: rag/corpus.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.errors import BadInput, Unavailable
from rag.ingest import Chunk, Document, IngestError, chunk_document, chunking, find_articles, read_document
from rag.models import embedder_precision, get_embedder
from rag.settings import Settings
from rag.vectorstore import BACKENDS, VectorStore, VectorStoreError, drop_stale, open_store, write_store

FORMAT_VERSION = 1  # a build without a "store" entry has an index.faiss: still readable
CURRENT = "CURRENT"
PENDING = "pending"
EMBED_GROUP_BATCHES = 8  # documents are embedded in groups of about this many batches, then saved
INDEX_TYPES = ("auto", "flat", "hnsw")


class IndexBuildError(BadInput, RuntimeError):
    """Nothing usable to index (no articles, every file rejected); the previous index is untouched."""


class StaleIndex(Unavailable, RuntimeError):
    """The index on disk does not match the settings or the articles; the message says how to fix it."""


@dataclass
class IndexReport:
    documents: int = 0
    chunks: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one message per corpus file that could not be used
    rejected: list[str] = field(default_factory=list)  # uploads refused before they reached the corpus
    duplicates: list[str] = field(default_factory=list)  # uploads whose bytes are already in the corpus: not copied
    renamed: list[str] = field(default_factory=list)  # uploads saved under another name than their sender gave
    resumed: list[str] = field(default_factory=list)  # embedded by an interrupted run, taken from pending/
    embedded_chunks: int = 0  # embedded by this run
    rebuilt: bool = False
    seconds: float = 0.0  # the whole run, reading files and loading the embedder included
    embed_seconds: float = 0.0  # chunking and embedding the new chunks only

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.rebuilt)

    @property
    def chunks_per_s(self) -> float:
        return self.embedded_chunks / self.embed_seconds if self.embed_seconds else 0.0

    def summary(self) -> str:
        if not self.changed:
            return f"index up to date: {self.documents} documents, {self.chunks} chunks ({self.seconds:.2f} s)"
        what = "rebuilt" if self.rebuilt else (
            f"+{len(self.added)} new, {len(self.updated)} changed, -{len(self.removed)} removed")
        if self.resumed:
            what += f"; {len(self.resumed)} documents embedded by an interrupted run reused"
        return (f"indexed {self.documents} documents, {self.chunks} chunks ({what}) in {self.seconds:.2f} s; "
                f"embedded {self.embedded_chunks} chunks at {self.chunks_per_s:.1f} chunks/s")


@dataclass
class LoadedIndex:
    folder: Path  # the build folder
    manifest: dict
    chunks: list[Chunk]  # chunk.id == row in `vectors` and id in `store`
    vectors: np.ndarray
    store: VectorStore

    @property
    def build_id(self) -> str:
        return self.folder.name

    @property
    def documents(self) -> dict[str, dict]:
        return self.manifest["documents"]


def index_folder(settings: Settings, corpus: Path | None = None) -> Path:
    """The main corpus indexes into `index_dir`; any other corpus into its own folder under it."""
    corpus = corpus or settings.corpus_dir
    if corpus.resolve() == settings.corpus_dir.resolve():
        return settings.index_dir
    digest = hashlib.sha1(str(corpus.resolve()).encode()).hexdigest()[:10]
    return settings.index_dir / "corpora" / f"{corpus.resolve().name}-{digest}"


def fingerprint(settings: Settings) -> dict:
    """What the vectors and chunks depend on: any change forces a full rebuild."""
    precision = embedder_precision(settings)  # named only when not float32: float32 indexes stay valid
    chunk_tokens, overlap_tokens = chunking(settings)
    return {"format": FORMAT_VERSION, "embedder": settings.embedder,
            **({"embedder_precision": precision} if precision != "float32" else {}),
            "chunk_tokens": chunk_tokens, "chunk_overlap_tokens": overlap_tokens,
            "index_type": settings.index_type, "vector_store": settings.vector_store,
            **({"hnsw_from_passages": settings.hnsw_from_passages} if settings.index_type == "auto" else {}),
            **({"milvus_uri": settings.milvus_uri} if settings.vector_store == "milvus" else {})}


# ---------------------------------------------------------------- reading the corpus


def load_corpus(paths: Iterable[Path], settings: Settings) -> tuple[list[Document], list[str]]:
    """Documents under `paths` and a message for every file that was skipped (and why)."""
    paths = list(paths)
    documents: list[Document] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    roots = [p for p in paths if p.is_dir()]
    for path in find_articles(paths):
        root = next((r for r in roots if path.is_relative_to(r)), path.parent)
        doc_id = path.relative_to(root).as_posix()
        try:
            doc = read_document(path, doc_id, settings.max_file_mb)
        except IngestError as exc:
            skipped.append(str(exc))
            continue
        if doc.sha256 in seen:
            skipped.append(f"{path}: duplicate of {seen[doc.sha256]}, skipped")
            continue
        seen[doc.sha256] = doc_id
        documents.append(doc)
    return documents, skipped


# ---------------------------------------------------------------- building


def build_index(paths: Iterable[Path], folder: Path, settings: Settings, rebuild: bool = False,
                progress: bool = True) -> IndexReport:
    """Index the articles under `paths` into `folder`, re-embedding only new or changed documents."""
    started = time.perf_counter()
    documents, skipped = load_corpus(paths, settings)
    if not documents:
        reasons = "; ".join(skipped) if skipped else "no .txt, .md, .html or .pdf files found"
        raise IndexBuildError(f"nothing to index in {', '.join(map(str, paths))}: {reasons}")
    report = sync_index(documents, folder, settings, rebuild=rebuild, progress=progress)
    report.skipped = skipped
    report.seconds = time.perf_counter() - started
    return report


def sync_index(documents: list[Document], folder: Path, settings: Settings, rebuild: bool = False,
               progress: bool = True) -> IndexReport:
    """Make the index in `folder` hold exactly `documents`; writes a new build only when something changed."""
    if settings.index_type not in INDEX_TYPES:
        raise StaleIndex(f"unknown index_type {settings.index_type!r}: use one of {', '.join(INDEX_TYPES)}")
    if settings.vector_store not in BACKENDS:
        raise StaleIndex(f"unknown vector_store {settings.vector_store!r}: use one of {', '.join(BACKENDS)}")
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    embedder = get_embedder(settings)
    with FileLock(str(folder / ".lock")):
        wanted_fp = fingerprint(settings)
        old = _load_compatible(folder, wanted_fp) if not rebuild else None
        old_docs = old.documents if old else {}
        report = IndexReport(documents=len(documents), rebuilt=old is None)
        new_ids = {d.doc_id for d in documents}
        report.removed = sorted(set(old_docs) - new_ids)
        keep = {d.doc_id for d in documents if old_docs.get(d.doc_id, {}).get("sha256") == d.sha256}
        fresh = [d for d in documents if d.doc_id not in keep]
        report.added = [d.doc_id for d in fresh if d.doc_id not in old_docs]
        report.updated = [d.doc_id for d in fresh if d.doc_id in old_docs]
        if old and not report.changed:
            report.chunks = len(old.chunks)
            report.seconds = time.perf_counter() - started
            return report
        chunks, vectors = _carry_over(old, keep)
        embedder.warm_up()  # loading the model is not embedding speed
        embed_started = time.perf_counter()
        pending = Pending(folder / PENDING, wanted_fp)
        new_chunks, new_vectors, report.resumed, report.embedded_chunks = pending.embed(fresh, settings, progress)
        if new_chunks:
            chunks += new_chunks
            vectors = np.vstack([vectors, new_vectors]) if len(vectors) else new_vectors
        report.embed_seconds = time.perf_counter() - embed_started
        for row, chunk in enumerate(chunks):
            chunk.id = row
        manifest = {
            "fingerprint": wanted_fp,
            "dim": int(vectors.shape[1]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "documents": {d.doc_id: {"sha256": d.sha256, "title": d.title, "path": d.path, "meta": d.meta,
                                     "chunks": sum(1 for c in chunks if c.doc_id == d.doc_id)}
                          for d in documents},
            "counts": {"documents": len(documents), "chunks": len(chunks)},
        }
        _write_build(folder, manifest, chunks, vectors.astype(np.float32), settings)
        pending.clear()  # what it held is in the build now
        report.chunks = len(chunks)
        report.seconds = time.perf_counter() - started
        return report


class Pending:
    """Documents embedded by a run that has not finished: each group of documents is saved to `pending/` as soon
    as it is embedded, so that a run interrupted after hours of embedding resumes where it stopped. Entries are
    keyed by the index fingerprint and the document's content; the folder is emptied once a build is swapped in.
    The embedder sees one group at a time (about EMBED_GROUP_BATCHES x embed_batch_size chunks); the chunks and
    vectors of the whole build are still gathered in memory (README, "Indexing a large corpus")."""

    def __init__(self, folder: Path, fingerprint: dict) -> None:
        self.folder = folder
        self.fingerprint = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    def embed(self, documents: list[Document], settings: Settings, progress: bool
              ) -> tuple[list[Chunk], np.ndarray, list[str], int]:
        """Chunks and vectors of `documents` in order, the ids of those taken from an earlier run, and the number
        of chunks embedded now."""
        from tqdm import tqdm

        embedder = get_embedder(settings)
        found = {d.doc_id: self._load(d) for d in documents}
        resumed = [doc_id for doc_id, saved in found.items() if saved is not None]
        todo = [d for d in documents if found[d.doc_id] is None]
        group: list[tuple[Document, list[Chunk]]] = []
        group_size = EMBED_GROUP_BATCHES * settings.embed_batch_size
        in_group = embedded = 0
        with tqdm(total=len(todo), desc="embed", unit="doc", disable=not progress or not todo) as bar:
            for number, document in enumerate(todo):
                group.append((document, chunk_document(document, embedder.count_tokens, *chunking(settings))))
                in_group += len(group[-1][1])
                if in_group >= group_size or number == len(todo) - 1:
                    texts = [c.text for _, chunks in group for c in chunks]
                    vectors = embedder.embed(texts) if texts else np.zeros((0, embedder.dim), np.float32)
                    embedded += len(texts)
                    row = 0
                    for doc, chunks in group:
                        found[doc.doc_id] = (chunks, vectors[row:row + len(chunks)])
                        self._save(doc, *found[doc.doc_id])
                        row += len(chunks)
                    bar.update(len(group))
                    group, in_group = [], 0
        chunks = [c for d in documents for c in found[d.doc_id][0]]
        parts = [found[d.doc_id][1] for d in documents if len(found[d.doc_id][1])]
        vectors = np.vstack(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
        return chunks, vectors, resumed, embedded

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _paths(self, document: Document) -> tuple[Path, Path]:
        key = hashlib.sha256(f"{self.fingerprint}:{document.doc_id}:{document.sha256}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.npy", self.folder / f"{key}.jsonl"

    def _load(self, document: Document) -> tuple[list[Chunk], np.ndarray] | None:
        vectors_path, chunks_path = self._paths(document)
        try:
            vectors = np.load(vectors_path, allow_pickle=False)
            chunks = [Chunk.from_json(json.loads(line)) for line in chunks_path.read_text("utf-8").splitlines()]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not there, or damaged: embed it again
        return (chunks, vectors) if len(chunks) == len(vectors) else None

    def _save(self, document: Document, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Vectors first, chunks last: the chunks file is what says the entry is complete (both atomic)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        vectors_path, chunks_path = self._paths(document)
        buffer = io.BytesIO()
        np.save(buffer, vectors, allow_pickle=False)
        _write_atomically(vectors_path, buffer.getvalue())
        lines = "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in chunks)
        _write_atomically(chunks_path, lines.encode("utf-8"))


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _carry_over(old: LoadedIndex | None, keep: set[str]) -> tuple[list[Chunk], np.ndarray]:
    if old is None or not keep:
        return [], np.zeros((0, 0), dtype=np.float32)
    rows = [c.id for c in old.chunks if c.doc_id in keep]
    return [old.chunks[r] for r in rows], old.vectors[rows]


def _write_build(folder: Path, manifest: dict, chunks: list[Chunk], vectors: np.ndarray,
                 settings: Settings) -> None:
    """Write a complete build into a hidden temporary folder (its vectors into the vector store too), then swap
    it in with two atomic renames; a build that fails half-way leaves the previous one current."""
    builds = folder / "builds"
    builds.mkdir(exist_ok=True)
    build_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    tmp = builds / f".tmp-{build_id}"
    tmp.mkdir()
    try:
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as out:
            for chunk in chunks:
                out.write(json.dumps(chunk.to_json(), ensure_ascii=False) + "\n")
        np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
        manifest["store"] = write_store(settings, folder, tmp, build_id, vectors, [c.doc_id for c in chunks])
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        _fsync_folder(tmp)
        os.replace(tmp, builds / build_id)
        pointer = folder / f".{CURRENT}.tmp"
        pointer.write_text(build_id, encoding="utf-8")
        os.replace(pointer, folder / CURRENT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in builds.iterdir():
        if stale.name != build_id:
            shutil.rmtree(stale, ignore_errors=True)
    drop_stale(settings, folder, build_id)


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
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
            chunks = [Chunk.from_json(json.loads(line)) for line in handle]
        vectors = np.load(build / "vectors.npy", mmap_mode="r", allow_pickle=False)  # read rows as needed
        store = open_store(manifest.get("store", {}), build, vectors, [c.doc_id for c in chunks])
    except VectorStoreError as exc:
        raise StaleIndex(str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise StaleIndex(f"index in {build} is damaged ({exc}): run `rag index --rebuild`") from exc
    if not (len(chunks) == len(vectors) == store.size):
        raise StaleIndex(f"index in {build} is inconsistent: run `rag index --rebuild`")
    if vectors.ndim != 2 or vectors.shape[1] != manifest.get("dim"):
        raise StaleIndex(f"index in {build} holds vectors of shape {vectors.shape}, its manifest says dimension "
                         f"{manifest.get('dim')}: run `rag index --rebuild`")
    return LoadedIndex(build, manifest, chunks, vectors, store)


def _load_compatible(folder: Path, wanted_fp: dict) -> LoadedIndex | None:
    try:
        loaded = load_index(folder)
    except StaleIndex:
        return None
    return loaded if loaded.manifest.get("fingerprint") == wanted_fp else None


def check_index(folder: Path, settings: Settings, documents: list[Document]) -> LoadedIndex:
    """Load and verify that the index matches the settings and the articles; StaleIndex says what differs."""
    loaded = load_index(folder)
    wanted = fingerprint(settings)
    have = loaded.manifest.get("fingerprint", {})
    differs = sorted(k for k in wanted if have.get(k) != wanted[k])
    if differs:
        detail = ", ".join(f"{k}: index {have.get(k)!r} vs settings {wanted[k]!r}" for k in differs)
        raise StaleIndex(f"index in {folder} was built with other settings ({detail}): run `rag index`")
    on_disk = {d.doc_id: d.sha256 for d in documents}
    indexed = {k: v["sha256"] for k, v in loaded.documents.items()}
    if on_disk != indexed:
        changed = sorted(set(on_disk.items()) ^ set(indexed.items()))
        names = sorted({name for name, _ in changed})
        raise StaleIndex(f"index in {folder} is out of date ({len(names)} article(s) added, changed or "
                         f"removed: {', '.join(names[:5])}): run `rag index`")
    return loaded


def open_index(settings: Settings, corpus: Path | None = None, progress: bool = False) -> LoadedIndex:
    """The index for a corpus, brought up to date first when `auto_index` is on (the default)."""
    corpus = corpus or settings.corpus_dir
    folder = index_folder(settings, corpus)
    if settings.auto_index:
        build_index([corpus], folder, settings, progress=progress)
        return load_index(folder)
    documents, _ = load_corpus([corpus], settings)
    return check_index(folder, settings, documents)
