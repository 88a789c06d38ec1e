"""`make bench` in a quick smoke run, so that it never rots. Its timings are never asserted: only that every row
was measured and written in the documented shape. It runs on the small packaged generator, in about two thirds
of the time: the same code paths but for the fitted decision, which the small model has none of (the checks decide;
the quality gate and tests/test_decision.py cover the decision)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, child_env

pytestmark = pytest.mark.integration

ROWS = ("answer time p50: whole document", "answer time p50: probes and fitted decision",
        "multi-document answer time p50: instructions kept",
        "multi-document time to first token p50: instructions kept", "time to first token: prefix kept",
        "transformers engine, time to first",
        "decode tokens/s",
        "retrieval p50: retrieve()", "index build chunks/s", "saving one document's generator state",
        "cold start: rag ask", "answer time p50 through the API", "time to the first shown token p50 through the API",
        "streamed answer total time p50 through the API", "peak RSS of rag chat")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_smoke_run_writes_every_row(tmp_path):
    out = tmp_path / "results.json"
    env = child_env(RAG_GENERATOR="qwen2.5-coder-0.5b")
    done = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    for row in rows:
        assert set(row) >= {"name", "value", "baseline", "ratio", "target", "meets"}
        assert row["value"] > 0 and (row["baseline"] is None or row["baseline"] > 0)
        assert row["meets"] in (True, False, None) and (row["meets"] is None) == (row["target"] == "")
    names = [row["name"] for row in rows]
    assert all(any(name.startswith(prefix) for name in names) for prefix in ROWS), names
    assert "| measure | value | baseline | ratio | target | meets |" in done.stdout
