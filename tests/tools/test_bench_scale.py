"""A small run of the scale benchmark, so that it never rots (timings are never asserted)."""

import json

import numpy as np
import pytest

from tools.bench_scale import main, vectors_like


@pytest.mark.integration
def test_a_small_scale_run_writes_every_index_and_a_chart(tmp_path):
    like = np.random.default_rng(0).standard_normal((50, 384)).astype(np.float32)
    np.save(tmp_path / "like.npy", like)
    out, chart = tmp_path / "scale.json", tmp_path / "scale.png"
    assert main(["--sizes", "3000", "--like", str(tmp_path / "like.npy"), "--out", str(out), "--chart", str(chart),
                 "--work", str(tmp_path / "work")]) == 0
    rows = json.loads(out.read_text())["rows"]
    kinds = {r["index"].split(" (")[0] for r in rows}
    assert kinds == {"faiss IndexFlatIP", "faiss HNSW", "faiss IVFFlat", "Milvus Lite HNSW", "bm25s"}
    exact = next(r for r in rows if r["index"].startswith("faiss IndexFlatIP"))
    assert exact["recall_at_10"] == 1.0
    assert max(r["recall_at_10"] for r in rows if r["index"].startswith("faiss HNSW")) > 0.9
    assert chart.stat().st_size > 10_000


@pytest.mark.unit
def test_vectors_like_real_ones_keep_their_spread():
    rng = np.random.default_rng(1)
    like = rng.standard_normal((400, 384)).astype(np.float32) * np.linspace(3, 0.01, 384, dtype=np.float32)
    drawn = vectors_like(5000, 2, like / np.linalg.norm(like, axis=1, keepdims=True))
    assert np.allclose(np.linalg.norm(drawn, axis=1), 1, atol=1e-5)
    spread = np.var(drawn, axis=0)
    assert spread[:10].mean() > 20 * spread[-10:].mean()


@pytest.mark.integration
def test_index_memory_measures_a_real_rag_index_run(capsys):
    assert main(["--index-memory", "20"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["documents"] == 20 and result["peak_rss_mb"] > 100 and "indexed 20 documents" in result["summary"]


@pytest.mark.integration
def test_saved_bm25_is_measured_against_bm25_in_memory(tmp_path, capsys):
    out = tmp_path / "bm25.json"
    assert main(["--bm25-saved", "2000", "--work", str(tmp_path / "work"), "--bm25-out", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["passages"] == 2000 and row["same_top10"] == "200/200"
    assert row["saved"]["disk_mb"] > 0 and row["saved"]["query_p50_ms"] > 0 and row["in_memory"]["load_s"] > 0
