"""Dated news through the API: a real `rag serve` process on 127.0.0.1 over the disagreeing bridge articles
(tests/data/dated/disagree, copied), driven by the official `openai` client and httpx. Each source carries its
article's publication date and outlet, the two outlets' figures come back as a disagreement, `/v1/articles` lists
the dates, and `since` / `until` keep the answer to the articles of those days."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import REPO, child_env, free_port
from tests.server.test_app import ANSWER_TIMEOUT_S, START_TIMEOUT_S, stop, stream_answer, wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DISAGREE = REPO / "tests" / "data" / "dated" / "disagree"
BRIDGE = "How much will the Harbor Bridge repairs in Norrport cost?"
PUBLISHED = {"ledger-bridge.md": "2024-05-02", "wire-bridge.txt": "2024-05-03", "other-park.md": "2024-04-20"}
OUTLETS = {"ledger-bridge.md": "Coastal Ledger", "wire-bridge.txt": "Metro Wire", "other-park.md": "Coastal Ledger"}


@dataclass
class Server:
    url: str
    log: Path

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=ANSWER_TIMEOUT_S)

    def ask(self, question: str = BRIDGE, **extra: object):  # noqa: ANN201 - an openai ChatCompletion
        return self.client().chat.completions.create(
            model="rag-news", messages=[{"role": "user", "content": question}], extra_body=extra or None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dated-api")
    shutil.copytree(DISAGREE, tmp / "corpus")
    port = free_port()
    log = tmp / "server.log"
    environment = child_env(RAG_CORPUS_DIR=str(tmp / "corpus"), RAG_INDEX_DIR=str(tmp / "index"),
                            RAG_AS_OF="2024-06-01")
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port)], cwd=REPO,
                                   env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(url, process, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while httpx.get(f"{url}/health", timeout=30).status_code != 200:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield Server(url, log)
    finally:
        stop(process)


def extra(completion) -> dict:  # noqa: ANN001 - an openai model: the API's own fields beside OpenAI's
    return completion.model_extra or {}


def test_articles_are_listed_with_their_publication_dates_and_outlets(server: Server) -> None:
    listed = httpx.get(f"{server.url}/v1/articles", timeout=30).json()["data"]
    assert {a["id"]: a["published"] for a in listed} == PUBLISHED, listed
    assert {a["id"]: a["outlet"] for a in listed} == OUTLETS
    assert all(a["copies"] == [] and a["date"] == a["published"] for a in listed)
    one = httpx.get(f"{server.url}/v1/articles/wire-bridge.txt", timeout=30).json()
    assert one["published"] == "2024-05-03" and one["outlet"] == "Metro Wire"


def test_sources_carry_dates_and_the_disagreement_is_reported(server: Server) -> None:
    reply = server.ask()
    fields, text = extra(reply), reply.choices[0].message.content
    assert not fields["refused"] and fields["sources"], fields
    for source in fields["sources"]:
        assert source["published"] == PUBLISHED[source["article"]], source
        assert source["outlet"] == OUTLETS[source["article"]]
    assert fields["dates"] == {}  # no range asked, none in the question
    assert fields["conflict"] is True, (text, fields)
    groups = fields["conflict_groups"]
    assert len(groups) == 2 and "disagree" in text
    values = " ".join(g["value"] for g in groups)
    assert "8.2 million" in values and "9.5 million" in values
    by_value = {("8.2" if "8.2" in g["value"] else "9.5"): g for g in groups}
    assert by_value["8.2"]["sources"][0]["published"] == "2024-05-02"
    assert by_value["9.5"]["sources"][0]["outlet"] == "Metro Wire"
    markers = {s["marker"] for s in fields["sources"]}
    assert all(set(g["markers"]) <= markers for g in groups)  # every group's marker is a cited source


def test_a_streamed_answer_carries_dates_in_its_source_events_and_the_conflict_last(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                                timeout=ANSWER_TIMEOUT_S)
    seen = asyncio.run(stream_answer(client, BRIDGE))
    metadata = [m for source in seen["sources"] for m in source["metadata"]]
    assert metadata and all(m["published"] == PUBLISHED[m["article"]] and m["outlet"] == OUTLETS[m["article"]]
                            for m in metadata), metadata
    final, text = seen["final"], "".join(seen["pieces"])
    assert {"conflict", "conflict_groups", "dates"} <= set(final) and "correction" not in final
    assert final["conflict"] is True and len(final["conflict_groups"]) == 2, final
    assert "disagree" in text  # the sentence streams before the final frame
    # one source per cited passage, the k-th for [k]: markers numbered in order of first appearance, without gaps,
    # the disagreement's groups numbered alike
    markers = list(dict.fromkeys(int(n) for n in re.findall(r"\[(\d+)\]", text)))
    assert markers == list(range(1, len(seen["sources"]) + 1)) == [m["marker"] for m in metadata], (text, metadata)
    grouped = [m for g in final["conflict_groups"] for m in g["markers"]]
    assert len(set(grouped)) == 2 and set(grouped) <= set(markers)
    assert all(m["name"].startswith(m["title"]) and m["published"] in m["name"] for m in metadata)


def test_since_keeps_the_answer_to_the_later_article(server: Server) -> None:
    reply = server.ask(since="2024-05-03")
    fields, text = extra(reply), reply.choices[0].message.content
    assert {s["article"] for s in fields["sources"]} == {"wire-bridge.txt"}, fields
    assert "9.5 million" in text and "8.2 million" not in text and fields["conflict"] is False
    assert fields["dates"]["since"] == "2024-05-03" and fields["dates"]["source"] == "request"
    retrieved = httpx.post(f"{server.url}/v1/retrieve", json={"query": BRIDGE, "since": "2024-05-03"}, timeout=60)
    assert {p["doc_id"] for p in retrieved.json()["data"]} == {"wire-bridge.txt"}


def test_a_range_with_no_article_says_so(server: Server) -> None:
    reply = server.ask(since="2024-06-01", until="2024-06-30")
    fields = extra(reply)
    assert reply.choices[0].message.content == "No article in the collection is dated between 2024-06-01 and " \
                                               "2024-06-30."
    assert fields["refused"] is True and fields["refusal_reason"] == "date-range" and fields["sources"] == []


def test_bad_dates_are_refused_with_a_message_naming_the_field(server: Server) -> None:
    for options, said in (({"since": "garbage"}, "since: 'garbage' is not a date"),
                          ({"until": "2024-02-30"}, "until: '2024-02-30' is not a day of the calendar"),
                          ({"since": "2024-05-04", "until": "2024-05-03"}, "since (2024-05-04) is after until")):
        with pytest.raises(openai.BadRequestError) as caught:
            server.ask(**options)
        assert caught.value.status_code == 400 and caught.value.body["message"].startswith(said), caught.value.body
