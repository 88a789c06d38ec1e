"""Locating packaged weight files, assembling and verifying them (sha256) into the cache."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterable
from pathlib import Path

from tqdm.auto import tqdm

from rag.files import atomic_file, partial_path, remove_stale_partials, write_text_atomically
from rag.models.registry import (
    HASH_CHUNK,
    HashMismatch,
    MissingModelPackage,
    PackagedGGUF,
    PackagedSplitZip,
    PackagedVersions,
    PackagedZipEntry,
)
from rag.settings import Settings

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
    write_text_atomically(_stamp_path(path), json.dumps(stamp), fsync=False)  # a torn stamp only costs a hash


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
    digest = hashlib.sha256()
    with atomic_file(dest) as out, _bar(total, f"assemble {dest.name}", progress) as bar:
        for block in blocks:
            digest.update(block)
            out.write(block)
            bar.update(len(block))
        if digest.hexdigest() != sha256:
            raise mismatch(digest.hexdigest())  # before the rename: the partial file is removed


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

    tmp = partial_path(out_dir)
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
    joined = partial_path(settings.models_dir / f"{spec.name}.zip")  # a scratch file, never renamed into place
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
    joined = partial_path(settings.models_dir / f"{spec.name}.zip")  # a scratch file, never renamed into place
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
    tmp = partial_path(out_dir)
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
    with atomic_file(dest) as out:
        _inflate_entry(spec, downloads, out, progress)  # raises before the rename when the entry does not verify
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
