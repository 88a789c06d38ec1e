"""`make bench`'s API rows: answer time through the OpenAI-compatible API ÷ `rag.answer` in this process, and what
streaming only the checked text (the default) costs against streaming the draft (`stream_unchecked`).

`rag serve` runs in its own process with the same settings; each question is answered in this process and then
through the API (the official `openai` client, not streamed), one after the other, so both see the same machine
conditions and neither runs while the other does. Each question is then streamed both ways, one after the other, in
alternating order: the time to the first text a client shows, and to the end of the stream. `python -m
tools.bench_api` measures only these rows and puts them into bench/results.json in place of the previous ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rag  # noqa: F401  - offline environment first
from rag.answering.flow import answer
from rag.evaluation.questions import DEFAULT_QUESTIONS, load_questions
from rag.settings import Settings, load_settings
from tools.results import RESULTS, Row, median, print_table, replace_rows

START_TIMEOUT_S = 600
ROW_NAME = "answer time p50 through the API (rag serve, openai client) ÷ rag.answer in-process"
FIRST_SHOWN_ROW = "time to the first shown token p50 through the API: checked text only (default) ÷ stream_unchecked"
STREAM_TOTAL_ROW = "streamed answer total time p50 through the API: checked text only (default) ÷ stream_unchecked"


@contextlib.contextmanager
def api_client(settings: Settings) -> Iterator[Any]:
    """`rag serve` in a new process on a free loopback port (the settings come from the same environment and
    rag.toml), and an `openai` client for it; the process is stopped at the end."""
    import socket

    import httpx
    import openai

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    keys = settings.api_keys()
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--host", "127.0.0.1", "--port",
                                   str(port)], env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"rag serve exited with {server.returncode}: {log.read()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("rag serve did not load its models")
                time.sleep(0.5)
            yield openai.OpenAI(base_url=f"{url}/v1", api_key=min(keys) if keys else "none", max_retries=0,
                                timeout=START_TIMEOUT_S)
        finally:
            server.terminate()
            server.wait(timeout=60)


def api_rows(settings: Settings, questions: list[str]) -> list[Row]:
    """The API's rows, measured against one `rag serve` process (see the module's text)."""
    with api_client(settings) as client:
        answer(questions[0], settings=settings)  # warm-up: both processes have the document's state at hand
        client.chat.completions.create(model="rag-news", messages=[{"role": "user", "content": questions[0]}])
        return [api_overhead_row(settings, questions, client), *streaming_rows(client, questions)]


def api_overhead_row(settings: Settings, questions: list[str], client: Any) -> Row:
    """The median answer time through the API against the median of the same answers by `rag.answer`."""
    through_api, in_process = [], []

    def ask(question: str) -> float:
        started = time.perf_counter()
        client.chat.completions.create(model="rag-news", messages=[{"role": "user", "content": question}])
        return time.perf_counter() - started

    for question in questions:  # interleaved: both ways see the same machine conditions
        started = time.perf_counter()
        answer(question, settings=settings)
        in_process.append(time.perf_counter() - started)
        through_api.append(ask(question))
    return Row(ROW_NAME, median(through_api), median(in_process), "<= 1.05", "s",
               f"{len(questions)} questions of the set, each in this process and through the API, one after the other")


def streaming_rows(client: Any, questions: list[str]) -> list[Row]:
    """Time to the first text a client shows, and to the end of the stream, with only the checked text streamed
    (the default: sent once the checks have decided) against the draft streamed as it is generated."""
    shown: dict[bool, list[float]] = {False: [], True: []}
    total: dict[bool, list[float]] = {False: [], True: []}
    for number, question in enumerate(questions):
        for unchecked in (False, True) if number % 2 == 0 else (True, False):  # neither way always goes first
            first, end = streamed(client, question, unchecked)
            shown[unchecked].append(first)
            total[unchecked].append(end)
    note = (f"{len(questions)} questions of the set, each streamed both ways one after the other (alternating which "
            "first); the checked text is sent once the checks have decided, so its first token comes at about the "
            f"decision time (median end of a stream {median(total[False])} s)")
    return [Row(FIRST_SHOWN_ROW, median(shown[False]), median(shown[True]), "", "s", note),
            Row(STREAM_TOTAL_ROW, median(total[False]), median(total[True]), "<= 1.05", "s", note)]


def streamed(client: Any, question: str, unchecked: bool) -> tuple[float, float]:
    """Seconds from the request to the first text piece of a stream, and to its end."""
    started, first = time.perf_counter(), None
    stream = client.chat.completions.create(model="rag-news", stream=True, extra_body={"stream_unchecked": unchecked},
                                            messages=[{"role": "user", "content": question}])
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    end = time.perf_counter() - started
    return (end if first is None else first), end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_api", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: three questions")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS})")
    args = parser.parse_args(argv)
    settings = load_settings()
    questions = [q.question for q in load_questions(settings.corpus_dir / DEFAULT_QUESTIONS)
                 if not q.unanswerable]
    rows = api_rows(settings, questions[:: 40 if args.quick else 4])
    print_table(rows)
    replace_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
