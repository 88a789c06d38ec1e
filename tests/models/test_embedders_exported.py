"""The exported embedder backends (`embedder_backend` onnx and openvino): the setting and what it records in an
index, an export's verification before use (a missing, changed or foreign file is exported again, an export far
from torch's vectors is refused), and the real EmbeddingGemma's vectors from each backend against torch float32's."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from rag.indexing.build import StaleIndex, build_index, check_index, fingerprint, load_corpus
from rag.models.assembly import file_sha256
from rag.models.embedders import ExportedEmbedder, embedder_precision, get_embedder
from rag.models.exported import MANIFEST, export_folder, read_verified
from rag.models.registry import ModelError
from rag.settings import Settings, SettingsError, load_settings
from tests.conftest import SEED_ARTICLE, make_settings, write

# Fixed texts for the vector comparisons: documents of several lengths (one past EmbeddingGemma's 512-token
# sliding window, so the bidirectional window mask is exercised), an empty-ish one, and questions.
DOCUMENTS = ("South Korea will invest 1.02 trillion won in AI semiconductors by 2027.",
             "Mark Zuckerberg met the president of South Korea in Seoul.",
             "The recipe needs two eggs and a cup of flour.",
             "x",
             SEED_ARTICLE.read_text(encoding="utf-8")[:4000])
QUERIES = ("How much will Korea spend on AI chips?", "Who met the South Korean president?")


# ---------------------------------------------------------------- the setting (no model)


@pytest.mark.unit
def test_the_backend_setting_is_checked_and_onnx_runs_float32_only():
    with pytest.raises(SettingsError, match="embedder_backend"):
        load_settings(embedder_backend="tensorrt")
    with pytest.raises(SettingsError, match="onnx backend runs float32 only"):
        load_settings(embedder_backend="onnx", embedder_precision="bfloat16")
    assert Settings().embedder_backend == "torch"
    assert embedder_precision(Settings(embedder_backend="onnx")) == "float32"
    assert embedder_precision(Settings(embedder_backend="openvino")) == "bfloat16"  # EmbeddingGemma's measured
    assert embedder_precision(Settings(embedder_backend="openvino", embedder_precision="int8")) == "int8"


@pytest.mark.unit
def test_an_index_records_its_backend_so_a_change_rebuilds_it():
    torch_fp, onnx_fp = fingerprint(Settings()), fingerprint(Settings(embedder_backend="onnx"))
    assert "embedder_backend" not in torch_fp  # indexes of earlier releases stay valid
    assert onnx_fp["embedder_backend"] == "onnx" and onnx_fp != torch_fp
    openvino = Settings(embedder_backend="openvino")
    assert fingerprint(openvino) != fingerprint(openvino.replace(embedder_precision="int8"))


@pytest.mark.unit
def test_a_gguf_embedder_refuses_another_backend():
    with pytest.raises(ModelError, match="llama.cpp"):
        get_embedder(Settings(embedder="nomic", embedder_backend="onnx"))


@pytest.mark.unit
def test_a_missing_runtime_names_its_extra(monkeypatch):
    import importlib.util

    from rag.models import exported

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(ModelError, match=r"needs openvino: `pip install -e '\.\[openvino\]'`"):
        exported.require_runtime("openvino")


@pytest.mark.unit
def test_exports_live_beside_the_prepared_model_one_graph_per_weights(tmp_path):
    settings = Settings(cache_dir=tmp_path)
    folder = export_folder("embeddinggemma", "unused", settings, "openvino", "bfloat16")
    assert folder == settings.models_dir / "embeddinggemma.openvino-fp32"
    assert export_folder("embeddinggemma", "unused", settings, "openvino", "float32") == folder  # a compile hint
    int8 = export_folder("embeddinggemma", "unused", settings, "openvino", "int8")
    assert int8.name == "embeddinggemma.openvino-int8"
    local = export_folder(str(tmp_path / "my-model"), str(tmp_path / "my-model"), settings, "onnx", "float32")
    assert local.parent == settings.models_dir
    assert local.name.startswith("my-model-") and local.name.endswith(".onnx-fp32")


def _fake_export(folder: Path, source: str = "source-digest") -> None:
    folder.mkdir(parents=True)
    for name, data in (("model.xml", b"<net/>"), ("model.bin", bytes(range(256)) * 64)):
        (folder / name).write_bytes(data)
    files = {name: file_sha256(folder / name) for name in ("model.xml", "model.bin")}
    manifest = {"format": 1, "backend": "openvino", "variant": "fp32", "source": source, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.unit
@pytest.mark.parametrize(("damage", "reason"), [
    (lambda f: (f / "model.bin").write_bytes(b"\1" + (f / "model.bin").read_bytes()[1:]), "SHA-256"),
    (lambda f: (f / "model.bin").unlink(), "model.bin is missing"),
    (lambda f: (f / MANIFEST).write_text("{\"format\": 1, \"fil", encoding="utf-8"), "no readable"),
    (lambda f: (f / MANIFEST).unlink(), "no readable"),
])
def test_a_damaged_export_is_not_used(tmp_path, caplog, damage, reason):
    folder = tmp_path / "embeddinggemma.openvino-fp32"
    _fake_export(folder)
    assert read_verified(folder, "openvino", "bfloat16", "source-digest") is not None
    damage(folder)
    stat = (folder / "model.bin").stat() if (folder / "model.bin").exists() else None
    if stat is not None:  # same size, and a later modification time than the stamp's
        os.utime(folder / "model.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with caplog.at_level(logging.WARNING, logger="rag.models.exported"):
        assert read_verified(folder, "openvino", "bfloat16", "source-digest") is None
    assert reason in caplog.text and "exporting again" in caplog.text


@pytest.mark.unit
def test_an_export_of_other_model_files_or_another_graph_is_not_used(tmp_path, caplog):
    folder = tmp_path / "embeddinggemma.openvino-fp32"
    _fake_export(folder)
    with caplog.at_level(logging.WARNING, logger="rag.models.exported"):
        assert read_verified(folder, "openvino", "float32", "another-digest") is None
        assert read_verified(folder, "openvino", "int8", "source-digest") is None
    assert "another source" in caplog.text and "another variant" in caplog.text
    assert read_verified(tmp_path / "absent", "openvino", "float32", "source-digest") is None


# ---------------------------------------------------------------- exporting a small model (MiniLM)


@pytest.fixture
def minilm_openvino(tmp_path) -> Settings:
    """MiniLM (seconds to export) with its exports in a temporary cache."""
    return Settings(embedder="minilm", cache_dir=tmp_path / "cache", embedder_backend="openvino",
                    embedder_precision="float32")


@pytest.mark.integration
def test_a_changed_export_file_is_exported_again_in_place(minilm_openvino, caplog):
    embedder = ExportedEmbedder("minilm", minilm_openvino)
    first = embedder.embed(list(DOCUMENTS))
    folder = export_folder("minilm", "unused", minilm_openvino, "openvino", "float32")
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    assert min(manifest["check_cosines"]) >= 0.99 and not list(folder.parent.glob("*.partial-*"))
    blob = bytearray((folder / "model.bin").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one weight changed, same size
    (folder / "model.bin").write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="rag.models.exported"):
        again = ExportedEmbedder("minilm", minilm_openvino).embed(list(DOCUMENTS))
    assert "model.bin does not have the SHA-256" in caplog.text
    assert np.allclose(again, first, atol=1e-5)
    assert file_sha256(folder / "model.bin") == manifest["files"]["model.bin"]  # a missing file: the unit tests
    kept = [p.name for p in minilm_openvino.models_dir.iterdir() if ".openvino-" in p.name and p.is_dir()]
    assert kept == [folder.name]  # an export is replaced in place: one folder per model, runtime and graph
    from openvino.tools.ovc import convert_impl  # the converter ran without its usage reporting (no network)

    assert convert_impl.tm.__name__ == "openvino.tools.ovc.telemetry_stub"


@pytest.mark.integration
def test_an_export_far_from_torch_is_refused_and_leaves_nothing(minilm_openvino, monkeypatch):
    from rag.models import exported

    monkeypatch.setattr(exported, "MIN_COSINE", 1.5)  # no export can reach it
    with pytest.raises(ModelError, match="was not kept: use embedder_backend"):
        ExportedEmbedder("minilm", minilm_openvino).warm_up()
    assert [p.name for p in minilm_openvino.models_dir.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.integration
def test_an_index_of_another_backend_is_refused_or_rebuilt(tmp_path):
    settings = make_settings(tmp_path, embedder="minilm", cache_dir=tmp_path / "cache", embedder_backend="onnx")
    write(settings.corpus_dir / "seed.txt", SEED_ARTICLE.read_text(encoding="utf-8"))
    build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    on_torch = settings.replace(embedder_backend="torch", auto_index=False)
    with pytest.raises(StaleIndex, match="embedder_backend: index 'onnx' vs settings None"):
        check_index(settings.index_dir, on_torch, load_corpus([settings.corpus_dir], on_torch)[0])
    assert build_index([settings.corpus_dir], settings.index_dir, on_torch, progress=False).rebuilt


# ---------------------------------------------------------------- the real EmbeddingGemma


# EmbeddingGemma with the option docs/models.md recommends (exported once into the user cache, about two minutes the
# first time); its float32 graph and ONNX are the same export path, checked here on MiniLM (seconds).
@pytest.mark.integration
@pytest.mark.parametrize(("embedder_name", "backend", "precision"), [
    ("minilm", "onnx", "float32"), ("minilm", "openvino", "float32"), ("embeddinggemma", "openvino", "int8")])
def test_each_backend_gives_torch_float32_vectors(embedder_name, backend, precision):
    reference = get_embedder(Settings(embedder=embedder_name, embedder_precision="float32"))
    embedder = get_embedder(Settings(embedder=embedder_name, embedder_backend=backend, embedder_precision=precision))
    assert isinstance(embedder, ExportedEmbedder)
    assert (embedder.dim, embedder.max_tokens) == (reference.dim, reference.max_tokens)
    assert embedder.count_tokens(DOCUMENTS[0]) == reference.count_tokens(DOCUMENTS[0])
    documents, queries = embedder.embed(list(DOCUMENTS)), embedder.embed_queries(list(QUERIES))
    cosines = np.concatenate([np.sum(documents * reference.embed(list(DOCUMENTS)), axis=1),
                              np.sum(queries * reference.embed_queries(list(QUERIES)), axis=1)])
    assert cosines.min() >= 0.99, cosines
    assert np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-5)
    assert list(np.argmax(queries @ documents.T, axis=1)) == [0, 1]  # each question finds its sentence
    alone = np.concatenate([embedder.embed([text]) for text in DOCUMENTS])
    assert np.sum(alone * documents, axis=1).min() >= 0.999  # a text's vector barely depends on its batch
