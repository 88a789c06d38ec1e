"""Resolving a model name (packaged, local folder or file) to the files to load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rag.models.assembly import _distribution, ensure_split_zip, ensure_versions_zip, ensure_zip_entry
from rag.models.registry import (
    EMBEDDERS,
    GENERATORS,
    MissingModelPackage,
    ModelError,
    PackagedFolder,
    PackagedGGUF,
    PackagedSplitZip,
    PackagedVersions,
    PackagedZipEntry,
)
from rag.settings import Settings

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
