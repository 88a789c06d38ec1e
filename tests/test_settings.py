"""Settings: defaults, rag.toml then RAG_* variables then arguments, named errors, and the choices that come from
the embedder's calibration."""

from pathlib import Path

import pytest

from rag.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _the_real_defaults(monkeypatch):
    monkeypatch.delenv("RAG_EMBEDDER", raising=False)  # conftest points the suite at minilm: not here


def test_defaults_are_used_without_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings == Settings()
    assert settings.host == "127.0.0.1"


def test_toml_file_then_environment_then_arguments(tmp_path, monkeypatch):
    config = tmp_path / "rag.toml"
    config.write_text('top_k = 7\n[retrieval]\nbm25 = false\nrrf_k = 10\n[paths]\ncorpus_dir = "articles"\n')
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.top_k, settings.bm25, settings.rrf_k, settings.corpus_dir) == (7, False, 10, Path("articles"))

    monkeypatch.setenv("RAG_TOP_K", "9")
    monkeypatch.setenv("RAG_BM25", "yes")
    settings = load_settings()
    assert (settings.top_k, settings.bm25, settings.rrf_k) == (9, True, 10)

    assert load_settings(top_k=2).top_k == 2


def test_config_path_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "other.toml"
    config.write_text('generator = "qwen2.5-coder-0.5b"\n')
    monkeypatch.setenv("RAG_CONFIG", str(config))
    assert load_settings().generator == "qwen2.5-coder-0.5b"


def test_bad_values_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_TOP_K", "many")
    with pytest.raises(SettingsError, match="top_k: expected a whole number from 1 to 20, got 'many'"):
        load_settings()


def test_unknown_keys_and_missing_files_are_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text("topk = 3\n")
    with pytest.raises(SettingsError, match="unknown setting.*topk"):
        load_settings()
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("top_k = = 3\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(tmp_path / "bad.toml")


def test_replace_coerces_like_the_environment():
    settings = Settings().replace(top_k="3", dense="off", cache_dir="~/x")
    assert settings.top_k == 3 and settings.dense is False and "~" not in str(settings.cache_dir)


def test_embedder_dependent_choices_come_from_its_calibration_unless_set():
    from rag.calibration import CALIBRATIONS
    from rag.ingest.chunking import chunking
    from rag.models.embedders import embedder_precision
    from rag.retrieval import calibration

    gemma, small = Settings(), Settings(embedder="minilm")
    assert gemma.embedder == "embeddinggemma"
    assert calibration(gemma) == CALIBRATIONS["embeddinggemma"] and calibration(small) == CALIBRATIONS["minilm"]
    assert calibration(gemma).min_relevance != calibration(small).min_relevance  # similarities differ in scale
    assert chunking(gemma) == (240, 48) and chunking(small) == (160, 32)
    assert embedder_precision(gemma) == "bfloat16" and embedder_precision(small) == "float32"
    chosen = load_settings(min_relevance="0.3", bm25_weight="0.5", figure_rule="on", chunk_tokens="64",
                           embedder_precision="int8")  # each differs from EmbeddingGemma's calibration
    assert (calibration(chosen).min_relevance, calibration(chosen).bm25_weight) == (0.3, 0.5)
    assert calibration(chosen).figure_rule is True and chunking(chosen) == (64, 48)
    assert calibration(load_settings(embedder="minilm", figure_rule="off")).figure_rule is False
    assert embedder_precision(chosen) == "int8"


@pytest.mark.parametrize(("name", "value"), [("figure_rule", "sometimes"), ("embedder_precision", "fp8")])
def test_choices_outside_their_list_are_named(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings(**{name: value})
