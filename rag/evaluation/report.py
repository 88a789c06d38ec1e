"""Writing an evaluation's outputs: results, metrics, report and plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rag.evaluation.questions import RATE_KEYS, Metrics
from rag.evaluation.result import Result
from rag.files import write_text_atomically

# ---------------------------------------------------------------- outputs


def write_outputs(out_dir: Path, results: list[Result], metrics: Metrics, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "results.jsonl",
                          "".join(json.dumps(result.to_dict(), ensure_ascii=False) + "\n" for result in results))
    write_text_atomically(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomically(out_dir / "report.md", render_report(results, metrics, name))
    plot_metrics(results, metrics, out_dir / "metrics.png", name)


def format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(metrics: Metrics) -> list[str]:
    return ["| metric | value |", "| --- | --- |"] + [f"| {k} | {format_value(v)} |" for k, v in metrics.items()]


def render_report(results: list[Result], metrics: Metrics, name: str) -> str:
    wrong = [r for r in results if not r.correct]
    lines = [f"# Evaluation: {name}", "", f"{metrics['questions']} questions ({metrics['answerable']} answerable, "
             f"{metrics['unanswerable']} unanswerable); generator {metrics['generator']}, embedder "
             f"{metrics['embedder']}, k={metrics['k']}.", "", *metrics_table(metrics), "",
             f"## Wrong answers ({len(wrong)})", ""]
    lines += [_wrong_line(r) for r in wrong] or ["None."]
    return "\n".join(lines) + "\n"


def _wrong_line(result: Result) -> str:
    q = result.question
    expected = "a refusal" if q.unanswerable else " / ".join(f"“{g}”" for g in q.answers)
    got = f"refused ({result.answer.refusal_reason or 'refusal wording'})" if result.refused else \
        f"“{result.answer.text}”"
    return f"- **{q.id}** {q.question} — expected {expected}; got {got}"


def plot_metrics(results: list[Result], metrics: Metrics, path: Path, name: str) -> None:
    """One figure: the rate metrics as bars, and the latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = {k: metrics[k] for k in RATE_KEYS if metrics.get(k) is not None}
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    bars.barh(list(rates)[::-1], list(rates.values())[::-1], color="#4c72b0")
    bars.set_xlim(0, 1)
    bars.set_title(f"{name}: rates ({metrics['questions']} questions)")
    for y, value in enumerate(list(rates.values())[::-1]):
        inside = value > 0.85
        bars.text(value - 0.01 if inside else value + 0.01, y, f"{value:.2f}", va="center", fontsize=8,
                  ha="right" if inside else "left", color="white" if inside else "black")
    totals = [r.answer.timings.get("total_s", 0.0) for r in results]
    ttfts = [r.answer.timings["ttft_s"] for r in results if r.answer.timings.get("ttft_s")]
    hist.hist(totals, bins=20, alpha=0.7, label="total")
    if ttfts:
        hist.hist(ttfts, bins=20, alpha=0.7, label="time to first token")
    hist.set_xlabel("seconds")
    hist.set_ylabel("questions")
    hist.set_title("latency")
    hist.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
