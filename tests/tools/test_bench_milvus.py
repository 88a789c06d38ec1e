"""A small run of the Milvus benchmark (tools/bench_milvus.py: in-place updates and full-text search on Milvus
Lite), so that it never rots (timings are never asserted)."""

import pytest

from tools.bench_milvus import fulltext, in_place

pytestmark = pytest.mark.integration  # Milvus Lite: a gRPC server on loopback, in this process


def test_the_milvus_benchmark_runs_at_a_small_size(tmp_path):
    row = in_place(2000, 5, tmp_path / "in-place", "auto")
    assert (row["rows_written"], row["rows_retired"], row["removed_rows_left"]) == (5, 5, 0)
    assert row["rows_held_after"] == 2000 and row["top10_equal_to_exact"] == 1.0
    assert row["incremental_calls_s"]["insert"] > 0 and row["incremental_total_s"] < row["rewrite_same_build_s"]
    found = fulltext(500, tmp_path / "fulltext")
    assert found["supported"] and found["questions"] > 100 and found["milvus_top10_in_bm25s_top10_scores"] > 0.8
