"""Chunking and embedding spread over a Ray cluster (Ray Data): the in-process chunks and vectors, in input order."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import BadInput, Failure, Unavailable
from rag.ingest.chunking import chunk_document, chunking
from rag.models.embedders import bound_index_memory, get_embedder
from rag.models.registry import EMBEDDERS
from rag.settings import Settings
from rag.types import Chunk, Document

# Documents are embedded in groups of about this many batches, then saved (in `rag index`'s process and here,
# where one group is one Ray batch).
EMBED_GROUP_BATCHES = 8
# Documents per Ray dataset: the driver holds one window of documents and its results, never the whole input.
# Each window starts its workers (and loads the model in them) again, so a window is large.
WINDOW_DOCUMENTS = 5_000
# Torch threads per worker at most: small embedding batches gain little from more threads, while each further
# worker adds a whole batch in flight (a guess for many-core nodes; a 2-core node gets one worker of 2 threads).
MAX_THREADS_PER_WORKER = 4
CONNECT_TIMEOUT_S = 5.0
LOCAL = "local"
INSTALL_HINT = "pip install -e '.[scale]'"


class RayMissing(Failure, RuntimeError):
    """Ray is not installed; the `scale` extra brings it."""


class ClusterUnreachable(Unavailable, ConnectionError):
    """The Ray cluster at the given address does not answer."""


class RayRequestError(BadInput, ValueError):
    """An address or a worker layout that cannot be served: another cluster than the one this process is connected
    to, or workers that do not fit on the cluster's nodes."""


class DistributedEmbedFailed(Failure, RuntimeError):
    """A worker could not chunk or embed (a model missing on a node, a worker lost)."""


def ray_embedded(documents: Iterable[Document], settings: Settings, address: str | None = None, *,
                 workers: int | None = None, threads_per_worker: int | None = None
                 ) -> Iterator[tuple[Document, list[Chunk], np.ndarray]]:
    """Each document in input order with its chunks and their unit vectors (float32, one row per chunk), chunked
    and embedded by Ray Data workers exactly as `rag.ingest.chunking.chunk_document` and the settings' embedder
    would here.

    Ray is joined on the first iteration (`connect`): with `address` None or "local", this process's Ray if it is
    connected, else a new instance on this machine, stopped at the end; otherwise the cluster at `address` (its
    head's `host:port`, or `ray://host:port`). `workers` and `threads_per_worker` default to what the cluster's
    CPUs allow (one worker of 2 threads on 2 cores)."""
    ray = _import_ray()
    started = connect(address, num_cpus=settings.n_threads)
    try:
        threads, count = worker_layout(workers, threads_per_worker)
        shipped = _portable(settings).replace(threads=threads)
        for window in _windows(documents, WINDOW_DOCUMENTS):
            yield from _embed_window(ray, window, shipped, threads, count)
    finally:
        if started:
            ray.shutdown()


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray: a new local instance for None or "local", else the cluster at `address`.
    True when this call started or joined Ray (the caller shuts it down), False when it was connected already."""
    ray = _import_ray()
    joining = address not in (None, LOCAL)
    if joining:
        _probe(address)
    if ray.is_initialized():
        if joining and address not in ("auto", ray.get_runtime_context().gcs_address):
            raise RayRequestError(f"this process is connected to Ray at {ray.get_runtime_context().gcs_address} "
                                     f"already; pass no address to use it, or call ray.shutdown() before joining "
                                     f"{address}")
        return False
    if not joining:
        # Ray starts its workers at niceness 15, below its own actors and this process: on an instance started for
        # this run the workers are the run. At 15 `rag index --ray` ran at 0.65 of in-process speed on 2 cores, at 0
        # at 0.89 (docs/scaling.md). A cluster's own setting is its operator's; an explicit one
        # here wins.
        os.environ.setdefault("RAY_worker_niceness", "0")
        _start_local(ray, num_cpus)
        return True
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise ClusterUnreachable(f"cannot join the Ray cluster at {address}: {exc}") from exc
    return True


def _start_local(ray: Any, num_cpus: int | None, attempts: int = 2) -> None:
    """A new local Ray instance ("local": even where RAY_ADDRESS names a cluster). Its node now and then fails to
    register within Ray's 30 s on a loaded 2-core machine (seen once in a full test run); one more try, then a
    clear error."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=LOCAL, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception when its node does not start
            ray.shutdown()
            if attempt == attempts:
                raise DistributedEmbedFailed(f"could not start a local Ray ({attempts} tries): {exc}") from exc


def worker_layout(workers: int | None = None, threads_per_worker: int | None = None) -> tuple[int, int]:
    """(threads per worker, workers) for the connected cluster: a worker must fit on one node."""
    import ray

    node_cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    node_cpus = [cpus for cpus in node_cpus if cpus > 0] or [int(ray.cluster_resources().get("CPU", 0))]
    if not any(node_cpus):
        raise DistributedEmbedFailed("the Ray cluster has no CPUs to embed on")
    threads = threads_per_worker or min(MAX_THREADS_PER_WORKER, min(node_cpus))
    fits = sum(cpus // threads for cpus in node_cpus)
    count = workers or max(1, fits)
    if threads < 1 or count < 1 or count > fits:  # Ray would wait for ever for a worker that never starts
        raise RayRequestError(f"{count} workers of {threads} threads do not fit on the Ray cluster's nodes "
                              f"({', '.join(map(str, node_cpus))} CPUs)")
    return threads, count


class EmbedWorker:
    """One Ray Data worker: loads the embedder once, then chunks and embeds batches of documents."""

    def __init__(self, settings: Settings, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        bound_index_memory()  # a worker on another machine does not inherit `rag index`'s environment
        self.settings = settings
        self.embedder = get_embedder(settings)
        self.embedder.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        documents = [Document(**json.loads(text)) for text in batch["document"]]
        groups = [chunk_document(doc, self.embedder.count_tokens, *chunking(self.settings)) for doc in documents]
        texts = [chunk.text for chunks in groups for chunk in chunks]
        vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)
        bounds = np.cumsum([0, *(len(chunks) for chunks in groups)])
        return {
            "position": np.asarray(batch["position"], dtype=np.int64),
            "chunks": _objects([json.dumps([c.to_dict() for c in chunks], ensure_ascii=False) for chunks in groups]),
            "vectors": _objects([vectors[a:b].astype(np.float32).tobytes() for a, b in itertools.pairwise(bounds)]),
            "dim": np.full(len(documents), vectors.shape[1], dtype=np.int64),
        }


def _embed_window(ray: Any, window: list[tuple[int, Document]], settings: Settings, threads: int,
                  workers: int) -> Iterator[tuple[Document, list[Chunk], np.ndarray]]:
    rows = [{"position": position, "document": json.dumps(asdict(doc), ensure_ascii=False)}
            for position, doc in window]
    dataset = ray.data.from_items(rows)
    _quiet_ordered(dataset.context)
    embedded = dataset.map_batches(EmbedWorker, fn_constructor_kwargs={"settings": settings, "threads": threads},
                                   batch_size=EMBED_GROUP_BATCHES * max(1, settings.embed_batch_size),
                                   batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                                   num_cpus=threads)
    results = embedded.iter_rows()
    try:
        for (position, doc), row in zip(window, results, strict=True):
            if int(row["position"]) != position:
                raise DistributedEmbedFailed(f"Ray returned document {row['position']} where {position} was due")
            chunks = [Chunk.from_dict(data) for data in json.loads(row["chunks"])]
            vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(chunks), int(row["dim"]))
            yield doc, chunks, vectors.copy()
    except ray.exceptions.RayError as exc:
        raise DistributedEmbedFailed(f"embedding on Ray failed: {_worker_reason(exc)}") from exc


def _worker_reason(exc: BaseException) -> str:
    """The worker's own exception line from Ray's report (which holds the worker's whole traceback)."""
    text = str(exc)
    found = list(re.finditer(r"^(?:\w+\.)*\w*(?:Error|Exception)\w*: ", text, re.MULTILINE))
    reason = text[found[-1].start():] if found else text.strip() or type(exc).__name__
    return " ".join(reason.split())


def _quiet_ordered(context: Any) -> None:
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": on purpose


def _windows(documents: Iterable[Document], size: int) -> Iterator[list[tuple[int, Document]]]:
    numbered = enumerate(documents)
    while window := list(itertools.islice(numbered, size)):
        yield window


def _objects(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _portable(settings: Settings) -> Settings:
    """The settings with the paths workers read made absolute: a worker need not start in this folder."""
    changes: dict[str, Any] = {"cache_dir": settings.cache_dir.resolve()}
    if settings.embedder not in EMBEDDERS and Path(settings.embedder).expanduser().is_dir():
        changes["embedder"] = str(Path(settings.embedder).expanduser().resolve())
    return settings.replace(**changes)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the `data` extra, checked before any work starts
    except ImportError as exc:
        raise RayMissing(f"embedding on Ray needs Ray Data ({exc.name or exc} is missing): `{INSTALL_HINT}`") from exc
    return ray


def _probe(address: str) -> None:
    """Fail within seconds on an address nothing listens on: ray.init retries a dead address for minutes."""
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterUnreachable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (start it with "
                                 f"`ray start --head`, or pass its head's host:port)") from exc


def _host_port(address: str) -> tuple[str, int]:
    client = address.startswith("ray://")
    bare = address.removeprefix("ray://").split("/")[0]
    host, colon, port = bare.rpartition(":")
    if not colon or not port.isdigit():
        host, port = bare, "10001" if client else "6379"
    return host.strip("[]") or "127.0.0.1", int(port)
