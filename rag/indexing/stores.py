"""Where an index build's vectors are searched: a FAISS file in the build folder (default) or a Milvus collection.

Both sit behind one small interface, `VectorStore.search(query, n, doc_id=None)`, so retrieval does not know
which one answers. A build's vectors are written before the build is swapped in (rag.indexing.build), so a failed write
leaves the previous build answering on either backend:
- FAISS: `index.faiss` beside the build's chunks: exact search (IndexFlatIP) or HNSW. `index_type = "auto"` (the
  default) is exact below `hnsw_from_passages` (250,000) and HNSW from there; "flat" and "hnsw" force one.
- Milvus (`vector_store = "milvus"`, the `scale` extra): a collection named after the index folder and the build
  that first wrote it (several corpora can share one Milvus), updated in place by incremental builds. A row is a
  chunk: primary key its `key` (kept by the chunk across builds, rag.indexing.build), its document's id and its vector.
  `milvus_uri` is a Milvus server or cluster (`http://host:port`) or a local path for Milvus Lite (default:
  `milvus.db` in the index folder); for a server, the user and token (or password) are read from the environment
  variables named by `milvus_user_env` and `milvus_token_env`, never from a file. Milvus Lite lets one process
  open a path at a time; for several processes run `milvus-lite server --data-dir DIR --host 127.0.0.1 --port N`
  and use its URI.
The vectors also stay in the build as `vectors.npy`: an incremental build carries unchanged documents' vectors
over without embedding them again, and retrieval reads exact similarities from them for the refusal gate.

How a Milvus collection is updated in place, and why a kill at any moment leaves the previous build answering
with exactly its results. New chunks get keys above every key an earlier build gave (rag.indexing.build), so a build's
rows all lie below its `key_bound`; its reader searches with the filter `key < key_bound`, which hides rows a
later build is inserting. An incremental build B, replacing A in A's collection:
1. redoes A's clean-up (deletes the rows A retired) and deletes the rows a write that died after A's swap had
   inserted (`milvus-inserting.json` in the index folder names their keys), all by primary key: A's reader
   sees none of them;
2. names the keys it is about to insert in `milvus-inserting.json`, inserts only its new rows (keys at or above
   A's bound: the new and changed articles' chunks), flushes, and checks they are there;
3. saves `keys.npy` (its keys, row order) and `retired.npy` (the keys of A's rows it does not hold: removed and
   changed articles' old chunks) in its build folder; the build is swapped in (rag.indexing.build);
4. after the swap, deletes its retired rows by primary key (`drop_stale`). Until they are gone (a kill between
   the swap and the delete: the next build deletes them in step 1), B's reader leaves them out by key.
The work is proportional to the articles added, changed or removed, not to the collection. A full rebuild writes
a fresh collection; the previous build answers from its own until the swap, then collections of this index
folder that the current build does not use are dropped.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.calibration import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from rag.errors import Failure
from rag.files import write_text_atomically
from rag.loaded import Loaded
from rag.settings import Settings

BACKENDS = ("faiss", "milvus")
FAISS_FILE = "index.faiss"
KEYS_FILE = "keys.npy"  # a Milvus build's chunk keys, in row order
RETIRED_FILE = "retired.npy"  # the keys of the previous build's rows a Milvus build does not hold
INSERTING_FILE = "milvus-inserting.json"  # in the index folder: the keys an in-place write is inserting
MILVUS_BATCH = 2000  # rows per insert call
MILVUS_KEYS_BATCH = 8192  # primary keys per delete or get call
MILVUS_EXCLUDE_MAX = 1024  # retired rows a reader leaves out in its filter; beyond that it over-fetches
MILVUS_LIMIT = 16384  # the most hits one Milvus search returns
FAISS_BATCH = 8192  # rows added to a FAISS index at a time (12 MB of 384-d vectors)
USER_ENV, TOKEN_ENV = "MILVUS_USER", "MILVUS_TOKEN"  # the settings' defaults, for builds that do not name theirs


class VectorStoreError(Failure, RuntimeError):
    """The vector store cannot be written or read; the message says which and what to do."""


class VectorStore(Protocol):
    backend: str

    def search(self, query: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
        """Up to `n` (chunk id, inner product) pairs, best first; only `doc_id`'s chunks when it is given."""
        ...


def write_store(settings: Settings, index_folder: Path, build: Path, build_id: str, vectors: np.ndarray,
                doc_ids: list[str], keys: np.ndarray, previous: tuple[Path, dict] | None = None) -> dict[str, Any]:
    """Write a build's vectors (row i is chunk i of document doc_ids[i], kept across builds as keys[i]; `previous`
    is the build it replaces and its manifest, when the chunks of its unchanged documents were carried over);
    returns the manifest's "store" entry."""
    index_type = resolve_index_type(settings, len(vectors))
    if settings.vector_store == "faiss":
        import faiss

        index = _make_faiss(vectors, index_type)
        faiss.write_index(index, str(build / FAISS_FILE))
        return {"backend": "faiss", "file": FAISS_FILE, "index_type": index_type}
    if settings.vector_store == "milvus":
        entry = {"backend": "milvus", "uri": milvus_uri(settings, index_folder), "index_type": index_type,
                 "user_env": settings.milvus_user_env, "token_env": settings.milvus_token_env}
        return {**entry, **_write_milvus(entry, build, build_id, index_folder, vectors, doc_ids, keys, previous)}
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
        return MilvusStore(entry, build)
    raise VectorStoreError(f"index in {build} names an unknown vector store {backend!r}: run `rag index --rebuild`")


def drop_stale(settings: Settings, index_folder: Path, current: str) -> None:
    """After build `current` is swapped in: delete the rows it retired (its previous build's rows of removed and
    changed articles) and drop the Milvus collections of this index folder it does not use (old builds' or failed
    writes')."""
    if settings.vector_store != "milvus":
        return
    build = index_folder / "builds" / current
    entry = json.loads((build / "manifest.json").read_text(encoding="utf-8")).get("store", {})
    if entry.get("backend") != "milvus":
        return
    client = _client_for(entry)
    _delete_retired(client, entry["collection"], build)
    _undo_dead_insert(client, entry["collection"], index_folder, current)  # the build's own: only removed
    prefix = collection_name(index_folder, "")
    for name in client.list_collections():
        if name.startswith(prefix) and name != entry["collection"]:
            client.drop_collection(name)


def finish_swap(settings: Settings, index_folder: Path, build: Path) -> None:
    """Finish the clean-up after `build`'s swap when a kill stopped it (nothing to do, and no call to Milvus,
    otherwise)."""
    if settings.vector_store == "milvus" and (build / RETIRED_FILE).is_file():
        drop_stale(settings, index_folder, build.name)


def milvus_uri(settings: Settings, index_folder: Path) -> str:
    if _remote(settings.milvus_uri):
        return settings.milvus_uri
    return str(Path(settings.milvus_uri).expanduser().resolve() if settings.milvus_uri
               else (index_folder / "milvus.db").resolve())


def collection_name(index_folder: Path, build_id: str) -> str:
    """rag_<index folder digest>_<build id>: Milvus allows letters, digits and underscores only."""
    folder = hashlib.sha1(str(index_folder.resolve()).encode()).hexdigest()[:10]
    return f"rag_{folder}_" + re.sub(r"[^A-Za-z0-9_]", "_", build_id)


def _remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://"))


# ---------------------------------------------------------------- FAISS


def _make_faiss(vectors: np.ndarray, index_type: str):  # noqa: ANN202 - a faiss.Index
    import faiss

    dim = vectors.shape[1]
    if index_type != "hnsw":
        return _flat_faiss(vectors)
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    for _, rows in vector_batches(vectors, FAISS_BATCH):
        index.add(rows)
    return index


def _flat_faiss(vectors: np.ndarray):  # noqa: ANN202 - a faiss.IndexFlatIP
    """An exact index holding `vectors`, its storage sized once and filled a batch at a time: adding batch after
    batch would grow it by doubling, which holds up to twice the vectors while it copies."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    row_bytes = vectors.shape[1] * 4
    index.codes.resize(len(vectors) * row_bytes)
    if len(vectors):
        codes = faiss.rev_swig_ptr(index.codes.data(), len(vectors) * row_bytes)  # a view of the index's storage
        for start, rows in vector_batches(vectors, FAISS_BATCH):
            codes[start * row_bytes:(start + len(rows)) * row_bytes] = rows.view(np.uint8).ravel()
    index.ntotal = len(vectors)
    return index


def vector_batches(vectors: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows as float32) of a memory-mapped array, copied a batch at a time. The file's pages are let go
    after each batch: read once, they would otherwise stay resident in this process, 1.5 KB a 384-d passage."""
    for start in range(0, len(vectors), size):
        yield start, np.array(vectors[start:start + size], dtype=np.float32)
        release_pages(vectors)


def release_pages(vectors: np.ndarray) -> None:
    """Let go of the resident pages of a memory-mapped array (read-only and file-backed: read again if needed)."""
    mapped = getattr(vectors, "_mmap", None)
    if mapped is not None:
        mapped.madvise(mmap.MADV_DONTNEED)


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

_clients: Loaded[Any] = Loaded()  # MilvusClient by (uri, user, token's SHA-256)


def milvus_client(uri: str, user_env: str = USER_ENV, token_env: str = TOKEN_ENV):  # noqa: ANN202 - a MilvusClient
    """One client per URI, credentials and process (Milvus Lite lets only one client of a process hold a local
    path). A server's credentials come from the environment variables named `user_env` and `token_env`: with a
    user, the token is its password; without one, the token goes as it is ("user:password" or an API key). A
    local path (Milvus Lite) has no authentication: none are sent."""
    if not _remote(uri):
        uri = str(Path(uri).expanduser().resolve())  # one client for a path, however it is spelt
    user, token = (os.environ.get(user_env, ""), os.environ.get(token_env, "")) if _remote(uri) else ("", "")
    if user and not token:
        raise VectorStoreError(f"{user_env} is set but {token_env} (its password or token) is not: set both, or "
                               f"only {token_env} for an API key or \"user:password\"")
    cache_key = (uri, user, hashlib.sha256(token.encode()).hexdigest())
    return _clients.get(cache_key, lambda: _connect(uri, user, token, user_env, token_env))


def _connect(uri: str, user: str, token: str, user_env: str, token_env: str):  # noqa: ANN202 - a MilvusClient
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise VectorStoreError("vector_store = \"milvus\" needs the scale extra: pip install -e '.[scale]'") from exc
    if not _remote(uri) and not Path(uri).parent.is_dir():
        raise VectorStoreError(f"milvus_uri {uri}: its folder {Path(uri).parent} does not exist")
    credentials = {"user": user, "password": token} if user else {"token": token} if token else {}
    try:
        return MilvusClient(uri=uri, **credentials)
    except Exception as exc:  # pymilvus raises its own and grpc errors; say which store failed
        hint = _connect_hint(uri, user_env, token_env, credentials)
        raise VectorStoreError(f"cannot open Milvus at {uri}: {exc} ({hint})") from exc


def _connect_hint(uri: str, user_env: str, token_env: str, credentials: dict) -> str:
    if not _remote(uri):
        return ("Milvus Lite lets one process open a path; for several, run `milvus-lite server --host 127.0.0.1` "
                "and set milvus_uri to its http:// URI")
    if credentials:
        return f"is it running, and are the credentials in {user_env} and {token_env} right?"
    return f"is it running? a server with authentication needs {token_env} (and {user_env}) set"


def _client_for(entry: dict[str, Any]):  # noqa: ANN202 - a MilvusClient
    return milvus_client(entry["uri"], entry.get("user_env", USER_ENV), entry.get("token_env", TOKEN_ENV))


def _write_milvus(entry: dict[str, Any], build: Path, build_id: str, index_folder: Path, vectors: np.ndarray,
                  doc_ids: list[str], keys: np.ndarray, previous: tuple[Path, dict] | None) -> dict[str, Any]:
    """Write a build's rows: in place into the previous build's collection when it has one for the same store
    (only the rows with new keys), else into a fresh collection. Returns the store entry's collection, key bound and
    count of retired rows; saves the build's keys and retired keys beside its vectors."""
    client = _client_for(entry)
    keys = np.asarray(keys, dtype=np.int64)
    if len(keys) != len(vectors) or len(doc_ids) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors, {len(doc_ids)} document ids and {len(keys)} keys")
    in_place = _reusable(client, entry, previous)
    if in_place is None:
        name = collection_name(index_folder, build_id)
        _create_collection(client, name, int(vectors.shape[1]), entry["index_type"])
        rows, retired = np.arange(len(keys)), np.zeros(0, dtype=np.int64)
    else:
        name, old_bound, old_build = in_place
        client.load_collection(name)  # a reopened Milvus Lite needs it before deleting or reading
        _delete_retired(client, name, old_build)  # the previous build's clean-up, again (a kill may have stopped it)
        _undo_dead_insert(client, name, index_folder, old_build.name)  # rows of a write that died before its swap
        rows = np.flatnonzero(keys >= old_bound)
        old_keys = np.load(old_build / KEYS_FILE, allow_pickle=False)
        retired = np.setdiff1d(old_keys, keys[keys < old_bound]).astype(np.int64)
        if len(rows):  # say which keys are about to be inserted, for the next build to undo should this one die
            _write_json(index_folder / INSERTING_FILE, {"collection": name, "build": build_id,
                                                        "keys": [int(keys[rows].min()), int(keys[rows].max()) + 1]})
    for start in range(0, len(rows), MILVUS_BATCH):
        batch = rows[start:start + MILVUS_BATCH]
        block = np.asarray(vectors[batch[0]:batch[-1] + 1] if batch[-1] - batch[0] == len(batch) - 1
                           else vectors[batch], dtype=np.float32)  # a slice reads a memory-mapped file in order
        client.insert(name, [{"key": int(keys[row]), "doc_id": doc_ids[row], "vector": vector.tolist()}
                             for row, vector in zip(batch.tolist(), block, strict=True)])
        release_pages(vectors)
    client.flush(name)
    if in_place is None:
        written = int(client.get_collection_stats(name).get("row_count", -1))
    else:
        written = len(_present(client, name, keys[rows]))
    if written != len(rows):
        raise VectorStoreError(f"Milvus collection {name} holds {written} of the {len(rows)} vectors just written")
    np.save(build / KEYS_FILE, keys, allow_pickle=False)
    if len(retired):
        np.save(build / RETIRED_FILE, retired, allow_pickle=False)
    return {"collection": name, "key_bound": int(keys.max()) + 1 if len(keys) else 0, "retired": len(retired),
            "written": len(rows)}


def _reusable(client: Any, entry: dict[str, Any], previous: tuple[Path, dict] | None
              ) -> tuple[str, int, Path] | None:
    """(collection, key bound, build folder) of the previous build when this build can update its collection in
    place: same Milvus, same index type, written with chunk keys, still there."""
    if previous is None:
        return None
    old_build, manifest = previous
    old = manifest.get("store", {})
    if any(old.get(k) != entry[k] for k in ("backend", "uri", "index_type")) or "key_bound" not in old:
        return None
    if not (old_build / KEYS_FILE).is_file() or not client.has_collection(old["collection"]):
        return None
    return old["collection"], int(old["key_bound"]), old_build


def _create_collection(client: Any, name: str, dim: int, index_type: str) -> None:
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=1024)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    if index_type == "hnsw":
        index.add_index("vector", index_type="HNSW", metric_type="IP",
                        params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
    else:
        index.add_index("vector", index_type="FLAT", metric_type="IP")
    index.add_index("doc_id", index_type="INVERTED")  # searches within one article
    client.create_collection(name, schema=schema, index_params=index)


def _undo_dead_insert(client: Any, name: str, index_folder: Path, current: str) -> None:
    """Delete, by primary key, the rows an in-place write inserted before it died (its INSERTING_FILE names its
    collection, its build and its range of keys), so that no key is ever held twice. The file of a build that
    was swapped in (the current one), or of another collection (a full rebuild came since), is only removed."""
    path = index_folder / INSERTING_FILE
    try:
        inserting = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if inserting.get("collection") == name and inserting.get("build") != current:
        start, end = inserting["keys"]
        for first in range(start, end, MILVUS_KEYS_BATCH):
            client.delete(name, ids=list(range(first, min(first + MILVUS_KEYS_BATCH, end))))
        client.flush(name)
    path.unlink()


def _write_json(path: Path, data: dict) -> None:
    """Write a small file whole or not at all, on disk before anything that relies on it happens."""
    write_text_atomically(path, json.dumps(data))


def _delete_retired(client: Any, name: str, build: Path) -> None:
    """Delete, by primary key, the rows `build` retired, then its list of them: a list left in a build says its
    clean-up may not have finished (deleting again is harmless)."""
    path = build / RETIRED_FILE
    if not path.is_file():
        return
    retired = np.load(path, allow_pickle=False)
    for start in range(0, len(retired), MILVUS_KEYS_BATCH):
        client.delete(name, ids=retired[start:start + MILVUS_KEYS_BATCH].tolist())
    client.flush(name)
    path.unlink()


def _present(client: Any, name: str, keys: np.ndarray) -> np.ndarray:
    """Which of `keys` the collection holds now (looked up by primary key)."""
    found: list[int] = []
    for start in range(0, len(keys), MILVUS_KEYS_BATCH):
        hits = client.query(name, ids=keys[start:start + MILVUS_KEYS_BATCH].tolist(), output_fields=["key"],
                            consistency_level="Strong")
        found += [int(hit["key"]) for hit in hits]
    return np.asarray(found, dtype=np.int64)


class MilvusStore:
    """One build's view of a collection that later builds may be updating: rows below its key bound (a later
    build's new rows are above it), without the rows it retired that are not deleted yet, mapped back to its rows
    by key. A build written before chunk keys has its own collection, primary key = row."""

    backend = "milvus"

    def __init__(self, entry: dict[str, Any], build: Path) -> None:
        uri, self.collection = entry["uri"], entry["collection"]
        self.client = _client_for(entry)
        if not self.client.has_collection(self.collection):
            raise VectorStoreError(f"Milvus at {uri} has no collection {self.collection}: run `rag index --rebuild`")
        self.client.load_collection(self.collection)  # a reopened Milvus Lite needs it before searching
        held = int(self.client.get_collection_stats(self.collection).get("row_count", 0))
        self._margin = 0  # hits asked beyond n: retired rows not deleted yet, too many to name in the filter
        if "key_bound" not in entry:
            self._pk, self._filter, self._keys, self._rows, self.size = "id", "", None, None, held
            return
        keys = np.load(build / KEYS_FILE, mmap_mode="r", allow_pickle=False)
        self.size = len(keys)
        ascending = bool(np.all(keys[1:] > keys[:-1])) if len(keys) > 1 else True
        self._rows = None if ascending else np.argsort(keys, kind="stable")
        self._keys = np.asarray(keys) if ascending else np.asarray(keys)[self._rows]
        self._pk, self._filter = "key", f"key < {int(entry['key_bound'])}"
        retired = (np.load(build / RETIRED_FILE, allow_pickle=False) if (build / RETIRED_FILE).is_file()
                   else np.zeros(0, dtype=np.int64))
        left = _present(self.client, self.collection, retired) if len(retired) else retired
        if len(left) > MILVUS_EXCLUDE_MAX:
            self._margin = len(left)
        elif len(left):
            self._filter += f" and key not in [{', '.join(map(str, left.tolist()))}]"
        if held < self.size:
            raise VectorStoreError(f"Milvus collection {self.collection} holds {held} rows, fewer than the "
                                   f"{self.size} of the build: run `rag index --rebuild`")

    def _row(self, key: int) -> int:
        """The build's row holding `key`; -1 when the build does not hold it."""
        if self._keys is None:
            return key
        at = int(np.searchsorted(self._keys, key))
        if at == len(self._keys) or int(self._keys[at]) != key:
            return -1
        return at if self._rows is None else int(self._rows[at])

    def search(self, query: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
        n = min(n, self.size)
        if n <= 0:
            return []
        where = " and ".join(part for part in (f"doc_id == {_quoted(doc_id)}" if doc_id is not None else "",
                                               self._filter) if part)
        limit = min(n + self._margin, MILVUS_LIMIT)
        hits = self.client.search(self.collection, data=[query.astype(np.float32).tolist()], limit=limit,
                                  filter=where, output_fields=[self._pk],
                                  search_params={"metric_type": "IP", "params": {"ef": max(HNSW_EF_SEARCH, limit)}})
        found = [(self._row(int(hit[self._pk])), float(hit["distance"])) for hit in hits[0]]
        return [(row, score) for row, score in found if row >= 0][:n]


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
