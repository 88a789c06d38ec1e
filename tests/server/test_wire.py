"""The API's wire format without a model: dates, outlets, near-copies and disagreements in the frames and replies,
and `since` / `until` checked before anything is queued (the app in-process, models never loaded)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rag.server.app import _article, answer_changes, create_app
from rag.server.wire import (
    PIECE_WORDS,
    ChatRequest,
    cited_events,
    completion,
    final_chunk,
    passage_event,
    source_event,
    sources_of,
    text_pieces,
)
from rag.settings import Settings
from rag.types import Answer, ArticleInfo, Citation, Passage

pytestmark = pytest.mark.unit

QUESTION = "How much will the Harbor Bridge repairs in Norrport cost?"
COPY = {"doc_id": "reprint.txt", "title": "Bridge bill <b>reprinted</b>", "published": "", "outlet": "Daily Echo"}


def passage(chunk_id: int, doc_id: str, published: str, outlet: str, also_in: list | None = None) -> Passage:
    text = f"Repairs will cost ${chunk_id + 8}.2 million."
    return Passage(chunk_id, doc_id, f"Title of {doc_id}", text, 0, len(text), (0, 0), rank=chunk_id + 1,
                   scores={"dense_similarity": 0.7}, published=published, outlet=outlet, also_in=also_in or [])


def citation(marker: int, p: Passage, published: str = "", outlet: str = "") -> Citation:
    return Citation(marker, p.chunk_id, p.doc_id, p.title, p.text, 0, len(p.text), p.text, 0.7, 1.0,
                    published, outlet)


LEDGER = passage(0, "ledger-bridge.md", "2024-05-02", "Coastal Ledger", [COPY])
WIRE = passage(1, "wire-bridge.txt", "2024-05-03", "Metro Wire")
GROUPS = [{"value": value, "markers": [marker], "sources": [
    {"doc_id": p.doc_id, "title": p.title, "published": p.published, "outlet": p.outlet}]}
    for value, marker, p in (("$8.2 million", 1, LEDGER), ("$9.5 million", 2, WIRE))]
DATES = {"since": "2024-05-01", "until": None, "latest": False, "phrase": "", "source": "request", "applied": True}


def disagreeing_answer() -> Answer:
    text = ("Repairs will cost $8.2 million [1]. The articles disagree: $8.2 million [1] (2024-05-02, Coastal "
            "Ledger); $9.5 million [2] (2024-05-03, Metro Wire).")
    # the first citation leaves its dates to the passage; the second carries its own
    return Answer(QUESTION, text, [citation(1, LEDGER), citation(2, WIRE, "2024-05-03", "Metro Wire")], False,
                  [LEDGER, WIRE], rewritten_question=QUESTION, conflict=True, conflict_groups=GROUPS, dates=DATES)


def test_source_events_carry_the_date_outlet_and_copies_of_each_passage() -> None:
    event = source_event([LEDGER])
    meta = event["data"]["metadata"][0]
    assert meta["published"] == "2024-05-02" and meta["outlet"] == "Coastal Ledger"
    assert meta["also_in"] == [COPY]
    plain = source_event([WIRE])["data"]["metadata"][0]
    assert plain["published"] == "2024-05-03" and plain["outlet"] == "Metro Wire" and "also_in" not in plain
    undated = source_event([passage(2, "old.txt", "", "")])["data"]["metadata"][0]
    assert undated["published"] == "" and undated["outlet"] == ""


def test_sources_carry_dates_from_the_citation_or_else_its_passage() -> None:
    first, second = sources_of(disagreeing_answer())
    assert (first["published"], first["outlet"], first["also_in"]) == ("2024-05-02", "Coastal Ledger", [COPY])
    assert (second["published"], second["outlet"]) == ("2024-05-03", "Metro Wire") and "also_in" not in second


def test_a_completion_and_the_final_frame_carry_the_conflict_and_the_dates() -> None:
    final = disagreeing_answer()
    body = completion(final, "http://127.0.0.1:8080/", 256)
    assert body["conflict"] is True and body["conflict_groups"] == GROUPS and body["dates"] == DATES
    assert [s["published"] for s in body["sources"]] == ["2024-05-02", "2024-05-03"]
    frame = final_chunk("id", "rag-news", final, final.text, 256)
    assert frame["conflict"] is True and frame["conflict_groups"] == GROUPS and frame["dates"] == DATES
    assert "correction" not in frame
    agreed = Answer(QUESTION, "It costs $8.2 million [1].", [citation(1, LEDGER)], False, [LEDGER])
    plain = completion(agreed, "http://127.0.0.1:8080/", 256)
    assert plain["conflict"] is False and plain["conflict_groups"] == [] and plain["dates"] == {}


def test_a_refusal_s_closest_sentence_carries_its_date() -> None:
    closest = citation(1, WIRE, "2024-05-03", "Metro Wire")
    refused = Answer(QUESTION, "The articles do not say.", [], True, [WIRE], refusal_reason="generator",
                     closest=closest)
    assert passage_event(closest, closest=True)["data"]["metadata"][0]["published"] == "2024-05-03"
    (source,) = sources_of(refused)
    assert source["closest"] and source["published"] == "2024-05-03" and source["outlet"] == "Metro Wire"
    (event,) = cited_events(refused)  # its own source, labelled as what it is, in the fields Open WebUI shows
    data = event["data"]
    assert data["source"]["name"] == data["metadata"][0]["name"] == \
        "Closest in the articles: Title of wire-bridge.txt (2024-05-03, Metro Wire)"
    assert data["metadata"][0]["closest"] is True and data["metadata"][0]["marker"] is None
    assert WIRE.text in data["document"][0] and "Closest sentence" in data["document"][0]


def test_each_cited_passage_is_its_own_source_in_the_order_of_its_marker() -> None:
    events = [e["data"] for e in cited_events(disagreeing_answer())]
    assert [e["metadata"][0]["marker"] for e in events] == [1, 2]  # the k-th source event is [k]
    # Open WebUI makes one source of the documents that share `metadata.source`: one id per passage
    assert len({e["metadata"][0]["source"] for e in events}) == 2
    assert all(len(e["document"]) == len(e["metadata"]) == len(e["distances"]) == 1 for e in events)
    ledger = events[0]
    assert ledger["source"]["name"] == ledger["metadata"][0]["name"] == \
        "Title of ledger-bridge.md (2024-05-02, Coastal Ledger)"
    assert ledger["metadata"][0]["sentence"] == LEDGER.text and ledger["metadata"][0]["also_in"] == [COPY]
    assert ledger["document"][0].startswith("**Title of ledger-bridge.md** (2024-05-02, Coastal Ledger)")
    assert f"**Supporting sentence:** {LEDGER.text}" in ledger["document"][0]
    # two passages of one article: two sources, with labels that differ too
    second = passage(3, "ledger-bridge.md", "2024-05-02", "Coastal Ledger")
    answer = Answer(QUESTION, "It costs $8.2 million [1]. Work starts soon [2].",
                    [citation(1, LEDGER), citation(2, second)], False, [LEDGER, second])
    names = [e["data"]["metadata"][0]["name"] for e in cited_events(answer)]
    assert len(set(names)) == 2 and names[1].endswith("passage 2")


def test_the_checked_text_streams_in_pieces_of_a_few_words_that_join_to_it() -> None:
    text = "It costs $8.2 million [1][2]. The articles disagree: $8.2 million [1] (2024-05-02, Coastal Ledger)."
    pieces = text_pieces(text)
    assert "".join(pieces) == text and len(pieces) > 1
    assert all(len(p.split()) <= PIECE_WORDS for p in pieces) and any("[1][2]." in p for p in pieces)
    assert text_pieces("The articles do not say.") == ["The articles do not", " say."]
    assert "".join(text_pieces(" two  words ")) == " two  words " and text_pieces("") == []


def test_articles_are_listed_with_publication_date_outlet_and_copies() -> None:
    info = ArticleInfo("wire-bridge.txt", "Norrport bridge repair bill", "2024-05-03", 1, published="2024-05-03",
                       outlet="Metro Wire", copies=["reprint.txt"])
    assert _article(info) == {"id": "wire-bridge.txt", "object": "article", "title": "Norrport bridge repair bill",
                              "date": "2024-05-03", "chunks": 1, "published": "2024-05-03", "outlet": "Metro Wire",
                              "copies": ["reprint.txt"]}
    old = _article(ArticleInfo("a.txt", "A", "2023-01-01", 2))
    assert old["published"] == "" and old["outlet"] == "" and old["copies"] == []


@pytest.mark.parametrize(("fields", "expected"), [
    ({"since": "2024-05-03"}, ("2024-05-03", None)),
    ({"since": "", "until": None}, (None, None)),
    ({"since": "2024-05-01", "until": "2024-05-01"}, ("2024-05-01", "2024-05-01")),
])
def test_a_request_s_dates_are_read_as_days(fields: dict, expected: tuple) -> None:
    body = ChatRequest(messages=[{"role": "user", "content": QUESTION}], **fields)
    assert tuple(d.isoformat() if d else None for d in (body.since, body.until)) == expected


@pytest.fixture
def client(tmp_path) -> TestClient:  # noqa: ANN001
    """The app in-process (no socket, and its lifespan never runs: the models stay unloaded, requests that pass
    validation get 503)."""
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    return TestClient(create_app(settings))


@pytest.mark.parametrize(("fields", "param", "said"), [
    ({"since": "garbage"}, "since", "since: 'garbage' is not a date YYYY-MM-DD"),
    ({"until": "2024-02-30"}, "until", "until: '2024-02-30' is not a day of the calendar"),
    ({"since": "03/05/2024"}, "since", "since: '03/05/2024' is not a date YYYY-MM-DD"),
    ({"until": 20240503}, "until", "until: expected a date as a string YYYY-MM-DD, not int"),
    ({"since": "2024-05-04", "until": "2024-05-03"}, None, "since (2024-05-04) is after until (2024-05-03)"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_dates_are_a_400_naming_the_field(client: TestClient, fields: dict, param: str | None, said: str,
                                              stream: bool) -> None:
    reply = client.post("/v1/chat/completions", json={"model": "rag-news", "stream": stream,
                                                      "messages": [{"role": "user", "content": QUESTION}], **fields})
    assert reply.status_code == 400 and reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["message"].startswith(said) and error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_input"


def test_good_dates_pass_and_retrieval_checks_them_too(client: TestClient) -> None:
    fine = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}],
                                                     "since": "2024-05-03", "until": "2024-05-31"})
    assert fine.status_code == 503  # past the checks: only the models are missing
    bad = client.post("/v1/retrieve", json={"query": QUESTION, "until": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("until: 'soon' is not a date")


def test_the_openapi_schema_describes_the_date_extras(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ChatRequest", "RetrieveRequest"):
        for field in ("since", "until"):
            described = schemas[name]["properties"][field]
            assert {"type": "string", "format": "date"} in described["anyOf"] and "YYYY-MM-DD" in described[
                "description"]
    chat = client.get("/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]["description"]
    assert "conflict_groups" in chat and "published" in chat and "since" in chat


def test_stream_unchecked_is_a_request_extra_over_the_setting() -> None:
    messages = [{"role": "user", "content": QUESTION}]
    def answer_settings(body: ChatRequest, settings: Settings) -> Settings:
        return settings.replace(**answer_changes(body))

    assert answer_settings(ChatRequest(messages=messages), Settings()).stream_unchecked is False  # checked only
    assert answer_settings(ChatRequest(messages=messages, stream_unchecked=True), Settings()).stream_unchecked
    on = Settings(stream_unchecked=True)
    assert answer_settings(ChatRequest(messages=messages), on).stream_unchecked is True
    assert answer_settings(ChatRequest(messages=messages, stream_unchecked=False), on).stream_unchecked is False
