"""The embedders (sentence-transformers on torch or from an ONNX/OpenVINO export, llama.cpp GGUF), loaded once per
process; `rag prepare`."""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from rag.calibration import PRECISIONS
from rag.loaded import Loaded
from rag.models.assembly import ensure_gguf
from rag.models.exported import Graph, ensure_exported
from rag.models.names import embedder_location, resolve_generator
from rag.models.registry import EMBEDDERS, GENERATORS, ModelError, PackagedSplitZip, PackagedVersions, PackagedZipEntry
from rag.settings import Settings

# ---------------------------------------------------------------- loaded once per process


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1, so that inner products are cosine similarities."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)




def bound_index_memory() -> None:
    """Keep `rag index` at the memory of its batches (call before the first embedding): oneDNN's cache of kernels
    per input shape is turned off (indexing meets hundreds of shapes and it grew the process by hundreds of MB;
    off, embedding is about 5% slower), and glibc's threshold for serving a large allocation from its own mapping is
    fixed at 1 MiB. glibc otherwise raises that threshold after the first large free, so each batch's activations
    come from the heap, which keeps them after the batch and fragments: RSS rose and fell between batches and its
    peak crept up with the number of batches (docs/scaling.md). An explicit setting in the
    environment wins for either."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _fix_mmap_threshold(1 << 20)


def _fix_mmap_threshold(size: int) -> None:
    import contextlib
    import ctypes

    m_mmap_threshold = -3  # malloc.h
    # Off glibc (musl, macOS) there is no such adaptive threshold, or no mallopt: nothing to fix.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(m_mmap_threshold, size)  # the C library this process already runs on


def embedder_precision(settings: Settings) -> str:
    """The `embedder_precision` setting, or with "auto" the embedder's measured default (float32 on onnx, the only
    precision it runs)."""
    if settings.embedder_precision != "auto":
        return settings.embedder_precision
    if settings.embedder_backend == "onnx":
        return "float32"
    return PRECISIONS.get(settings.embedder, "float32")


def torch_dtype(precision: str):  # noqa: ANN201 - a torch.dtype
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


class Embedder:
    """Sentence-transformers embeddings, normalised for inner-product search; loads on first use."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self._model = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                location = embedder_location(self.name, self.settings)
                precision = embedder_precision(self.settings)
                kwargs = {"model_kwargs": {"dtype": torch_dtype(precision)}} if precision == "bfloat16" else {}
                model = SentenceTransformer(location, device=self.settings.device, local_files_only=True, **kwargs)
                if precision == "int8":
                    import torch

                    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
                self._model = model

    @property
    def model(self):  # noqa: ANN201 - a SentenceTransformer
        self.warm_up()
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Passages (documents): with the model's document prompt where it has one (EmbeddingGemma does)."""
        return self._encode(self.model.encode_document, texts, progress)

    def embed_query(self, text: str) -> np.ndarray:
        """A question: with the model's query prompt where it has one; the same as `embed` for MiniLM."""
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Questions in batches (the API's embeddings of several queries)."""
        return self._encode(self.model.encode_query, texts, False)

    def _encode(self, encode: Callable, texts: list[str], progress: bool) -> np.ndarray:
        vectors = encode(texts, batch_size=self.settings.embed_batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=progress)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        return unit_rows(vectors)  # again in float32: a bfloat16 model's own normalising is off by ~1e-3

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.tokenize(text))


class ExportedEmbedder:
    """A sentence-transformers embedder run from its ONNX or OpenVINO export (`embedder_backend`), normalised; the
    export is made on first use (or by `rag prepare`) and verified before every load. No torch model is loaded."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.backend = settings.embedder_backend
        self._graph: Graph | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._graph is None:
                location = embedder_location(self.name, self.settings)
                precision = embedder_precision(self.settings)
                folder, manifest = ensure_exported(self.name, location, self.settings, self.backend, precision)
                self._graph = Graph(folder, manifest, location, precision, self.settings.n_threads)

    @property
    def model(self) -> Graph:
        """The loaded graph; its encode_document and encode_query take sentence-transformers' arguments."""
        self.warm_up()
        return self._graph  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        return int(self.model.manifest["dim"])

    @property
    def max_tokens(self) -> int:
        return self.model.max_tokens

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Passages (documents), behind the model's document prompt where it has one."""
        return self.model.encode_document(texts, batch_size=self.settings.embed_batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Questions, behind the model's query prompt where it has one."""
        return self.model.encode_query(texts, batch_size=self.settings.embed_batch_size)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.tokenize(text))


class LlamaEmbedder:
    """A GGUF embedding model run by llama.cpp in embedding mode (nomic), normalised; loads on first use."""

    context_tokens = 2048  # nomic-embed-text-v1.5's trained context; longer inputs are cut to it

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.spec: PackagedZipEntry = EMBEDDERS[name]  # type: ignore[assignment]
        self._llm = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            self._load()

    def _load(self):  # noqa: ANN202 - a llama_cpp.Llama
        """The model, loaded on first use; the caller holds the lock."""
        if self._llm is None:
            import llama_cpp

            path = embedder_location(self.name, self.settings)
            # Embedding mode decodes every input whole in one ubatch, so the batch sizes are the context.
            llm = llama_cpp.Llama(model_path=path, embedding=True, n_ctx=self.context_tokens,
                                  n_batch=self.context_tokens, n_ubatch=self.context_tokens,
                                  n_threads=self.settings.n_threads, n_threads_batch=self.settings.n_threads,
                                  verbose=False)
            if llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE:
                llm.close()
                raise ModelError(f"{path} declares no pooling: llama.cpp would give a vector per token, not per text")
            self._llm = llm
            atexit.register(self.close)  # freed during interpreter teardown instead, Llama.__del__ raises
        return self._llm

    def close(self) -> None:
        """Free the model now (loading again on the next use)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    @property
    def dim(self) -> int:
        with self._lock:
            return int(self._load().n_embd())

    @property
    def max_tokens(self) -> int:
        return self.context_tokens

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Passages (documents), each behind the model's document prefix."""
        return self._encode([self.spec.document_prefix + text for text in texts], progress)

    def embed_query(self, text: str) -> np.ndarray:
        """A question, behind the model's query prefix."""
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Questions in batches, each behind the model's query prefix."""
        return self._encode([self.spec.query_prefix + text for text in texts], False)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        size = max(1, self.settings.embed_batch_size)
        with self._lock, tqdm(total=len(texts), desc=f"embed {self.name}", disable=not progress, leave=False) as bar:
            llm = self._load()
            vectors = np.empty((len(texts), llm.n_embd()), dtype=np.float32)
            for start in range(0, len(texts), size):
                batch = texts[start:start + size]
                vectors[start:start + len(batch)] = llm.embed(batch, truncate=True)
                bar.update(len(batch))
        return unit_rows(vectors)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._load().tokenize(text.encode("utf-8"), add_bos=False))


AnyEmbedder = Embedder | ExportedEmbedder | LlamaEmbedder
_cache: Loaded[AnyEmbedder] = Loaded()


def get_embedder(settings: Settings) -> AnyEmbedder:
    """The embedder of these settings, loaded once per process for each model file it reads (caches that link the
    same assembled model share one copy: EmbeddingGemma holds 0.6 GB)."""
    key = ("embedder", settings.embedder, embedder_precision(settings), settings.device, _embedder_home(settings),
           settings.embedder_backend)
    if isinstance(EMBEDDERS.get(settings.embedder), PackagedZipEntry):  # a GGUF: llama.cpp, not sentence-transformers
        if settings.embedder_backend != "torch":
            raise ModelError(f"embedder {settings.embedder} runs on llama.cpp: embedder_backend "
                             f"{settings.embedder_backend!r} applies to sentence-transformers embedders only")
        return _cache.get(key, lambda: LlamaEmbedder(settings.embedder, settings))
    if settings.embedder_backend != "torch":
        return _cache.get(key, lambda: ExportedEmbedder(settings.embedder, settings))
    return _cache.get(key, lambda: Embedder(settings.embedder, settings))


def _embedder_home(settings: Settings) -> str:
    """Where the embedder's files are assembled for these settings (links resolved); package folders need none."""
    spec = EMBEDDERS.get(settings.embedder)
    if isinstance(spec, PackagedVersions | PackagedSplitZip):
        return str((settings.models_dir / spec.name).resolve())
    if isinstance(spec, PackagedZipEntry):
        return str((settings.models_dir / spec.filename).resolve())
    return ""


def prepare(settings: Settings, models: Iterable[str] | None = None, progress: bool = True) -> dict[str, str]:
    """Assemble and verify packaged models: the settings' embedder and every installed generator, or the named
    models (generators or embedders); returns name -> folder, file or "error: …"."""
    names = list(models or [settings.embedder, *GENERATORS])
    status: dict[str, str] = {}
    for name in names:
        try:
            if name in EMBEDDERS or (name == settings.embedder and name not in GENERATORS):
                status[name] = embedder_location(name, settings, download=True)
                if name == settings.embedder and settings.embedder_backend != "torch":  # its export, made once
                    status[name] = str(ensure_exported(name, status[name], settings, settings.embedder_backend,
                                                       embedder_precision(settings))[0])
                continue
            source = resolve_generator(name)
            status[name] = str(ensure_gguf(source.spec, settings, progress)) if source.spec else source.location
        except ModelError as exc:
            status[name] = f"error: {exc}"
    return status
