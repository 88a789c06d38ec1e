from pathlib import Path

import pytest

from rag.settings import Settings, SettingsError, load_settings


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
    with pytest.raises(SettingsError, match="top_k: expected int, got 'many'"):
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
