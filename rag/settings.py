"""The one settings object of the library: defaults, then a TOML file, then RAG_* environment variables."""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, get_type_hints

import platformdirs

from rag.errors import BadInput

CONFIG_ENV = "RAG_CONFIG"
ENV_PREFIX = "RAG_"
DEFAULT_CONFIG_FILE = "rag.toml"


class SettingsError(BadInput, ValueError):
    """A setting has an unknown name, a value of the wrong type or one out of its range.

    >>> try:
    ...     rag.answer("How much will South Korea invest in AI chips?", top_k=0)
    ... except rag.SettingsError as error:
    ...     print(error)
    setting top_k: expected a whole number from 1 to 20, got 0
    """


# The largest values a caller may ask for (the API's schema states the same: rag/server/wire.py). 20 passages of up
# to 240 tokens still fit the 4,096-token context beside the prompt and a reply; a retrieval call lists up to 50.
MAX_TOP_K = 20
MAX_RETRIEVE_K = 50
MAX_REPLY_TOKENS = 1024
# Every numeric setting's range, inclusive: a value outside it is refused by name, never used as it is.
RANGES: dict[str, tuple[float, float]] = {
    "threads": (0, 1024), "chunk_tokens": (0, 8192), "chunk_overlap_tokens": (-1, 4096),
    "max_file_mb": (0.001, 100_000), "embed_batch_size": (1, 4096), "hnsw_from_passages": (1, 10**12),
    "top_k": (1, MAX_TOP_K), "read_window_tokens": (0, 8192), "candidates": (1, 10_000), "rrf_k": (1, 100_000),
    "bm25_weight": (-1, 1000), "context_tokens": (256, 1_048_576), "max_new_tokens": (1, MAX_REPLY_TOKENS),
    "temperature": (0, 2), "seed": (0, 2**32 - 1), "states_in_memory": (0, 10_000), "states_on_disk": (0, 10**6),
    "request_timeout_s": (0.001, 86_400), "max_retries": (0, 100), "min_relevance": (-1, 1), "min_support": (0, 1),
    "verify_threshold": (-1, 2), "max_question_chars": (1, 10**6), "history_turns": (0, 100),
    "conflict_checks": (0, 100), "port": (0, 65_535), "api_port": (0, 65_535), "max_upload_mb": (0.001, 100_000),
    "max_queue": (1, 10**6),
}


def _default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("rag-news", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Every tunable of the pipeline. Paths are relative to the working directory unless absolute.

    Measured defaults come from rag.calibration. Every field is documented in docs/configuration.md, generated
    from this class by `python -m tools.settings_table` (a test fails when the two differ). A path may be given as
    a str; a number out of its range (RANGES) is a SettingsError naming the setting.

    >>> rag.Settings(corpus_dir="my_news", top_k=6)
    Settings(corpus_dir=PosixPath('my_news'), ...)
    >>> rag.Settings().replace(top_k="3").top_k  # coerced as an environment value would be
    3
    """

    # where things live
    corpus_dir: Path = Path("corpus")  # the folder of articles (.txt, .md, .html, .pdf; subfolders too)
    index_dir: Path = Path("index")  # where index builds are kept (one folder per corpus)
    cache_dir: Path = field(default_factory=_default_cache_dir)  # assembled models and saved generator states

    # models: a registry name, a local folder/file, or a Hugging Face model id
    embedder: str = "embeddinggemma"  # minilm: the small, fast option (docs/models.md)
    generator: str = "qwen2.5-coder-1.5b"  # qwen2.5-coder-0.5b: faster, weaker; "openai:<model>": a server
    engine: str = "auto"  # auto | llama-cpp | transformers
    reranker: str = ""  # a CrossEncoder name or folder; empty = no re-ranking
    device: str = "cpu"  # the torch device for the embedder and a transformers generator
    threads: int = 0  # 0 = all cores

    # ingestion and chunking (sizes in tokens of the embedder's tokenizer)
    chunk_tokens: int = 0  # 0: the embedder's measured size (rag.calibration.CHUNK_SIZES; 160 where none)
    chunk_overlap_tokens: int = -1  # -1: the embedder's measured overlap (32 where none was measured)
    max_file_mb: float = 20.0  # a larger article file is skipped with a message
    embed_batch_size: int = 32  # chunks embedded at a time by `rag index`
    embedder_precision: str = "auto"  # auto (the embedder's measured default) | float32 | bfloat16 | int8
    embedder_backend: str = "torch"  # torch | onnx (float32 only) | openvino: the embedder's runtime (docs/models.md)

    # index and retrieval
    index_type: str = "auto"  # auto (exact below hnsw_from_passages, HNSW from there) | flat | hnsw
    hnsw_from_passages: int = 250_000  # where "auto" switches (measured: docs/scaling.md)
    vector_store: str = "faiss"  # faiss | milvus (rag/indexing/stores.py; milvus needs the `scale` extra)
    milvus_uri: str = ""  # http://host:port for a Milvus server, or a Milvus Lite path; "" = <index>/milvus.db
    milvus_user_env: str = "MILVUS_USER"  # the environment variable holding a Milvus server's user (optional)
    milvus_token_env: str = "MILVUS_TOKEN"  # the variable holding its password, or a token ("user:password", API key)
    ray_address: str = ""  # `rag index` embeds on Ray: "local" (a Ray started for the run) or a cluster's address
    auto_index: bool = True  # rebuild a missing or stale index on load instead of failing
    top_k: int = 4  # passages given to the generator
    # retrieved passages (not a whole document) are read as their best-matching sentence and its neighbours up
    # to this many generator tokens each; 0 reads them whole
    read_window_tokens: int = 0
    candidates: int = 20  # passages each stage (dense, BM25) proposes before fusion
    dense: bool = True  # the dense (vector) stage
    bm25: bool = True  # the BM25 (lexical) stage
    rrf_k: int = 60  # reciprocal rank fusion's k
    bm25_weight: float = -1.0  # BM25's vote in rank fusion (dense = 1); -1: the embedder's calibrated value
    figure_rule: str = "auto"  # auto (the embedder's calibration) | on | off: passages with every asked figure first
    fold_copies: bool = True  # near-copies of a passage (wire reprints) take one place in the top-k, not several
    # the day "last week", "this year", "in March" count from (YYYY-MM-DD); "" = today (rag/dates.py)
    as_of: str = ""

    # generation
    context_tokens: int = 4096  # the KV cache: about 28 KB per token for the 1.5B model (115 MB at 4096)
    max_new_tokens: int = 160  # the longest reply, in tokens
    temperature: float = 0.0  # 0: greedy decoding (the same answer every time)
    seed: int = 0  # the sampling seed, when temperature > 0
    states_in_memory: int = 4  # processed document prefixes kept in RAM (about 30 MB per 1,000 tokens each)
    states_on_disk: int = 32  # saved document states kept in <cache_dir>/states (least recently used go first)
    # generator = "openai:<model>": an OpenAI-compatible server (rag/generators/openai_server.py; the `scale` extra)
    openai_base_url: str = "http://127.0.0.1:8000/v1"  # the server of an "openai:<model>" generator
    openai_api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the server's key
    request_timeout_s: float = 120.0  # one request to that server
    max_retries: int = 2  # connection failures, 429 and 5xx, with backoff, before any text has streamed

    # answering
    whole_document: bool = True  # read the whole document from its saved state when the passages share one
    index_states: bool = True  # `rag index` saves the generator state of each document (else: on first use)
    refusal_text: str = "The articles do not say."  # what a refusal says
    min_relevance: float = -1.0  # below this similarity of the best passage, refuse; -1: the embedder's calibrated
    min_support: float = 0.5  # fraction of a sentence's key words a cited passage must hold
    partial_answers: bool = True  # a two-part question is answered part by part; a part not in the articles is named
    trim_details: bool = True  # a detail no passage gives ("in 2021") is cut from a supported sentence, not refused
    focus_check: bool = False  # refuse unless the cited passages carry the question's figures, years and names
    verify: bool = True  # the generator judges whether the passages state the answer (rag/answering/verification.py)
    verify_threshold: float = -1.0  # P(Yes) + 0.1 x sentence support below it is refused; -1: the generator's own
    # the fitted answer-or-refuse decision (rag/answering/decision.py): "" = the one packaged for the generator, if any;
    # "none" = the lexical checks and verify_threshold decide, as in the previous release
    decision_file: str = ""
    offer_refusal: bool = False  # let the first ask reply with refusal_text (off: it always answers; checks decide)
    second_look: bool = True  # with offer_refusal: when the generator refuses, ask again without that option
    max_question_chars: int = 2000  # a longer question is refused as bad input
    history_turns: int = 3  # earlier turns read to rewrite a follow-up question
    # other articles' passages asked for their own answer, to say when the articles disagree (0: never asked)
    conflict_checks: int = 2

    # user interface
    host: str = "127.0.0.1"  # where the page and the API listen; beyond this machine needs a login or keys
    port: int = 7860  # the chat page (`rag chat`), with the API at /v1
    auth: str = ""  # "user:password" turns on Gradio's login
    no_auth: bool = False  # serve a non-local host without a login, on purpose (a warning is printed)
    max_upload_mb: float = 10.0  # the largest article upload (page and API)
    max_queue: int = 40  # requests waiting for the models (one is answered at a time); more are told "busy"

    # the OpenAI-compatible API (`rag serve`, and beside the chat page in `rag chat`; rag/server/app.py)
    api_port: int = 8080  # `rag serve`
    api_keys_env: str = "RAG_API_KEYS"  # the environment variable holding the API's keys, comma-separated
    # stream the reply as it is generated and send the checked text as `correction` (for clients that apply it);
    # off: only the checked text is streamed, once the checks have decided (a request's `stream_unchecked` overrides)
    stream_unchecked: bool = False

    def __post_init__(self) -> None:
        self._coerce_paths()
        self._check_ranges()
        if self.figure_rule not in ("auto", "on", "off"):
            raise SettingsError(f"setting figure_rule: expected auto, on or off, got {self.figure_rule!r}")
        if self.as_of:
            try:
                date.fromisoformat(self.as_of)
            except ValueError:
                raise SettingsError(f"setting as_of: expected a date YYYY-MM-DD, got {self.as_of!r}") from None
        if self.embedder_precision not in ("auto", "float32", "bfloat16", "int8"):
            raise SettingsError("setting embedder_precision: expected auto, float32, bfloat16 or int8, got "
                                f"{self.embedder_precision!r}")
        if self.embedder_backend not in ("torch", "onnx", "openvino"):
            raise SettingsError("setting embedder_backend: expected torch, onnx or openvino, got "
                                f"{self.embedder_backend!r}")
        if self.embedder_backend == "onnx" and self.embedder_precision not in ("auto", "float32"):
            raise SettingsError(f"setting embedder_precision: the onnx backend runs float32 only, got "
                                f"{self.embedder_precision!r} (openvino runs bfloat16 and int8 weights)")

    def _coerce_paths(self) -> None:
        """A path setting given as a str or os.PathLike (`Settings(corpus_dir="my_news")`) is kept as a Path."""
        for name in ("corpus_dir", "index_dir", "cache_dir"):
            value = getattr(self, name)
            if not isinstance(value, Path):
                if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                    raise SettingsError(f"setting {name}: expected a path (str or os.PathLike), got {value!r:.80}")
                object.__setattr__(self, name, Path(os.fspath(value)).expanduser())

    def _check_ranges(self) -> None:
        types = field_types()
        for name, (low, high) in RANGES.items():
            value, kind = getattr(self, name), types[name]
            wrong_type = isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int)
            if wrong_type or not low <= value <= high:
                raise SettingsError(out_of_range(name, value))

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed; values are coerced like environment values."""
        return dataclasses.replace(self, **_coerce_all(changes))

    def check_exposure(self, host: str | None = None, auth: Any = None) -> str:
        """Whether the chat page may listen on `host` (default: the setting): "" on this machine only or behind a
        login, a warning when `no_auth` opens it on purpose, else a SettingsError saying what to do."""
        host = self.host if host is None else host
        if _is_loopback(host) or auth or self.auth:
            return ""
        if self.no_auth:
            return (f"warning: the chat page listens on {host} without a login; anyone who can reach this "
                    "machine can use it and upload articles")
        raise SettingsError(f"host {host} exposes the chat page beyond this machine: set a login with "
                            "--auth USER:PASSWORD (setting auth), or pass --no-auth to serve it without one")

    def api_keys(self) -> frozenset[str]:
        """The keys the API accepts (`Authorization: Bearer KEY`), read from the environment, never from a file."""
        return frozenset(k.strip() for k in os.environ.get(self.api_keys_env, "").split(",") if k.strip())

    def check_api_exposure(self, host: str | None = None) -> str:
        """Whether the API may listen on `host` (default: the setting): "" on this machine only or with keys, a
        warning when `no_auth` opens it on purpose, else a SettingsError saying what to do."""
        host = self.host if host is None else host
        if _is_loopback(host) or self.api_keys():
            return ""
        if self.no_auth:
            return (f"warning: the API listens on {host} without keys; anyone who can reach this machine can use "
                    "it, upload and delete articles")
        raise SettingsError(f"host {host} exposes the API beyond this machine: put its keys in the environment "
                            f"variable {self.api_keys_env} (comma-separated), or pass --no-auth to serve it without")

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"


def settings_or_default(settings: Any) -> Settings:
    """The settings a public function was given, or `load_settings()` for None; SettingsError for anything else."""
    if settings is None:
        return load_settings()
    if not isinstance(settings, Settings):
        raise SettingsError(f"settings: expected a rag.Settings (or None for the defaults), got "
                            f"{type(settings).__name__}")
    return settings


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then the TOML file (argument, $RAG_CONFIG or ./rag.toml), then RAG_* variables, then overrides.

    >>> rag.load_settings(top_k=6).top_k
    6
    """
    values: dict[str, Any] = {}
    path = Path(config_file or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)
    if path.is_file():
        values.update(_read_toml(path))
    elif config_file or os.environ.get(CONFIG_ENV):
        raise SettingsError(f"settings file not found: {path}")
    values.update(_from_environment())
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**_coerce_all(values))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    flat: dict[str, Any] = {}
    for key, value in data.items():  # sections such as [retrieval] are only for readability
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _from_environment() -> dict[str, Any]:
    names = {f.name for f in fields(Settings)}
    found = {}
    for key, value in os.environ.items():
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV:
            name = key[len(ENV_PREFIX) :].lower()
            if name in names:
                found[name] = value
    return found


@functools.cache
def field_types() -> dict[str, Any]:
    """Each setting's declared type (read once)."""
    return get_type_hints(Settings)


def _coerce_all(values: dict[str, Any]) -> dict[str, Any]:
    types = field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(types))}")
    return {name: _coerce(name, value, types[name]) for name, value in values.items()}


def _coerce(name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(value)
                return lowered in {"1", "true", "yes", "on"}
            return bool(value)
        if kind is Path:
            return Path(value).expanduser()
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise TypeError(value)  # True is not 1, and 3.5 passages are not 3
        return kind(value)
    except (TypeError, ValueError) as exc:
        if name in RANGES:
            raise SettingsError(out_of_range(name, value)) from exc
        raise SettingsError(f"setting {name}: expected {kind.__name__}, got {value!r:.80}") from exc


def out_of_range(name: str, value: Any) -> str:
    """What a numeric setting accepts, and what it was given."""
    low, high = RANGES[name]
    what = "a whole number" if field_types()[name] is int else "a number"
    return f"setting {name}: expected {what} from {low:g} to {high:g}, got {value!r:.80}"
