"""Where an index build's vectors are searched: a FAISS file in the build folder (default) or a Milvus collection.

Both sit behind one small interface, `VectorStore.search(query, n, doc_id=None)`, so retrieval does not know
which one answers. A build's vectors are written in full before the build is swapped in (rag.index), so a
failed write leaves the previous build answering on either backend:
- FAISS: `index.faiss` beside the build's chunks: exact search (IndexFlatIP) or HNSW. `index_type = "auto"` (the
  default) is exact below `hnsw_from_passages` (250,000) and HNSW from there; "flat" and "hnsw" force one.
- Milvus (`vector_store = "milvus"`, the `scale` extra): one collection per build, named after the index folder
  and the build, so several corpora can share one Milvus. `milvus_uri` is a Milvus server or cluster
  (`http://host:port`) or a local path for Milvus Lite (default: `milvus.db` in the index folder). Milvus Lite
  lets one process open a path at a time; for several processes run
  `milvus-lite server --data-dir DIR --host 127.0.0.1 --port N` and use its URI. Collections of builds that
  are no longer current (or of a write that failed) are dropped after the next successful swap.
The vectors also stay in the build as `vectors.npy`: an incremental build carries unchanged documents' vectors
over without embedding them again, and retrieval reads exact similarities from them for the refusal gate.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.errors import Failure
from rag.settings import Settings

BACKENDS = ("faiss", "milvus")
FAISS_FILE = "index.faiss"
MILVUS_BATCH = 2000  # rows per insert call
# HNSW settings measured by rag.bench_scale (README, "Scaling out"): recall@10 >= 0.95 at a million passages
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 100, 512


class VectorStoreError(Failure, RuntimeError):
    """The vector store cannot be written or read; the message says which and what to do."""


class VectorStore(Protocol):
    backend: str

    def search(self, query: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
        """Up to `n` (chunk id, inner product) pairs, best first; only `doc_id`'s chunks when it is given."""
        ...


def write_store(settings: Settings, index_folder: Path, build: Path, build_id: str, vectors: np.ndarray,
                doc_ids: list[str]) -> dict[str, Any]:
    """Write a build's vectors (row i is chunk i of document doc_ids[i]); returns the manifest's "store" entry."""
    index_type = resolve_index_type(settings, len(vectors))
    if settings.vector_store == "faiss":
        import faiss

        faiss.write_index(_make_faiss(vectors, index_type), str(build / FAISS_FILE))
        return {"backend": "faiss", "file": FAISS_FILE, "index_type": index_type}
    if settings.vector_store == "milvus":
        uri = milvus_uri(settings, index_folder)
        name = collection_name(index_folder, build_id)
        _write_milvus(milvus_client(uri), name, vectors, doc_ids, index_type)
        return {"backend": "milvus", "uri": uri, "collection": name, "index_type": index_type}
    raise VectorStoreError(f"unknown vector_store {settings.vector_store!r}: use one of {', '.join(BACKENDS)}")


def resolve_index_type(settings: Settings, passages: int) -> str:
    """"flat" or "hnsw": `index_type`, or for "auto" exact search below `hnsw_from_passages`, HNSW from there."""
    if settings.index_type != "auto":
        return settings.index_type
    return "hnsw" if passages >= settings.hnsw_from_passages else "flat"


def open_store(entry: dict[str, Any], build: Path, vectors: np.ndarray, doc_ids: list[str]) -> VectorStore:
    """The store a manifest's "store" entry names (a build written before stores existed has a FAISS file)."""
    backend = entry.get("backend", "faiss")
    if backend == "faiss":
        return FaissStore(build / entry.get("file", FAISS_FILE), doc_ids)
    if backend == "milvus":
        return MilvusStore(entry["uri"], entry["collection"])
    raise VectorStoreError(f"index in {build} names an unknown vector store {backend!r}: run `rag index --rebuild`")


def drop_stale(settings: Settings, index_folder: Path, current: str) -> None:
    """Drop the Milvus collections of this index folder's builds other than `current` (old or failed writes)."""
    if settings.vector_store != "milvus":
        return
    client = milvus_client(milvus_uri(settings, index_folder))
    keep = collection_name(index_folder, current)
    prefix = collection_name(index_folder, "")
    for name in client.list_collections():
        if name.startswith(prefix) and name != keep:
            client.drop_collection(name)


def milvus_uri(settings: Settings, index_folder: Path) -> str:
    if settings.milvus_uri.startswith(("http://", "https://", "tcp://")):
        return settings.milvus_uri
    return str(Path(settings.milvus_uri).expanduser().resolve() if settings.milvus_uri
               else (index_folder / "milvus.db").resolve())


def collection_name(index_folder: Path, build_id: str) -> str:
    """rag_<index folder digest>_<build id>: Milvus allows letters, digits and underscores only."""
    folder = hashlib.sha1(str(index_folder.resolve()).encode()).hexdigest()[:10]
    return f"rag_{folder}_" + re.sub(r"[^A-Za-z0-9_]", "_", build_id)


# ---------------------------------------------------------------- FAISS


def _make_faiss(vectors: np.ndarray, index_type: str):  # noqa: ANN202 - a faiss.Index
    import faiss

    dim = vectors.shape[1]
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class FaissStore:
    backend = "faiss"

    def __init__(self, path: Path, doc_ids: list[str]) -> None:
        import faiss

        self.index = faiss.read_index(str(path))
        self.size = self.index.ntotal
        self._rows: dict[str, np.ndarray] = {}
        for row, doc_id in enumerate(doc_ids):
            self._rows.setdefault(doc_id, [])
            self._rows[doc_id].append(row)

    def search(self, query: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
        import faiss

        params = None
        if doc_id is not None:
            rows = np.asarray(self._rows.get(doc_id, []), dtype=np.int64)
            if not len(rows):
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))
        n = min(n, self.size)
        if n <= 0:
            return []
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), n, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]


# ---------------------------------------------------------------- Milvus

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def milvus_client(uri: str):  # noqa: ANN202 - a pymilvus.MilvusClient
    """One client per URI and process (Milvus Lite lets only one client of a process hold a local path)."""
    with _clients_lock:
        if uri not in _clients:
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise VectorStoreError("vector_store = \"milvus\" needs the scale extra: "
                                       "pip install -e '.[scale]'") from exc
            if not uri.startswith(("http://", "https://", "tcp://")) and not Path(uri).parent.is_dir():
                raise VectorStoreError(f"milvus_uri {uri}: its folder {Path(uri).parent} does not exist")
            try:
                _clients[uri] = MilvusClient(uri=uri)
            except Exception as exc:  # pymilvus raises its own and grpc errors; say which store failed
                raise VectorStoreError(f"cannot open Milvus at {uri}: {exc} (Milvus Lite lets one process open a "
                                       "path; for several, run `milvus-lite server --host 127.0.0.1` and set "
                                       "milvus_uri to its http:// URI)") from exc
        return _clients[uri]


def _write_milvus(client: Any, name: str, vectors: np.ndarray, doc_ids: list[str], index_type: str) -> None:
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=1024)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
    index = client.prepare_index_params()
    if index_type == "hnsw":
        index.add_index("vector", index_type="HNSW", metric_type="IP",
                        params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
    else:
        index.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index)
    for start in range(0, len(vectors), MILVUS_BATCH):
        rows = range(start, min(start + MILVUS_BATCH, len(vectors)))
        client.insert(name, [{"id": i, "doc_id": doc_ids[i], "vector": vectors[i].tolist()} for i in rows])
    client.flush(name)
    written = client.get_collection_stats(name).get("row_count")
    if int(written) != len(vectors):
        raise VectorStoreError(f"Milvus collection {name} holds {written} of {len(vectors)} vectors after writing")


class MilvusStore:
    backend = "milvus"

    def __init__(self, uri: str, collection: str) -> None:
        self.client = milvus_client(uri)
        self.collection = collection
        if not self.client.has_collection(collection):
            raise VectorStoreError(f"Milvus at {uri} has no collection {collection}: run `rag index --rebuild`")
        self.client.load_collection(collection)  # a reopened Milvus Lite needs it before searching
        self.size = int(self.client.get_collection_stats(collection).get("row_count", 0))

    def search(self, query: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
        n = min(n, self.size)
        if n <= 0:
            return []
        hits = self.client.search(self.collection, data=[query.astype(np.float32).tolist()], limit=n,
                                  filter=f"doc_id == {_quoted(doc_id)}" if doc_id is not None else "",
                                  search_params={"metric_type": "IP", "params": {"ef": max(HNSW_EF_SEARCH, n)}})
        return [(int(hit["id"]), float(hit["distance"])) for hit in hits[0]]


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
