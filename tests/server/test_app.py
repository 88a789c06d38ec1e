"""The OpenAI-compatible API: a real `rag serve` process on 127.0.0.1 (real models), driven by the official `openai`
client (sync and async, streaming and not) and by httpx for the endpoints OpenAI has no method for.

One server per module, started once; the tests run one after another against it, so it is the only process that
generates while they run. A second, model-less server (its models fail to load on purpose) checks keys and 503s.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from rag.evaluation.metrics import answer_found
from rag.evaluation.questions import load_questions
from rag.settings import Settings
from tests.conftest import REPO, SEED_ARTICLE, TEST_EMBEDDER, TEST_GENERATOR, child_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

START_TIMEOUT_S = 600
ANSWER_TIMEOUT_S = 300
REFUSAL = Settings().refusal_text
SEED_ID = SEED_ARTICLE.name
QUESTION = "How much will South Korea invest in AI semiconductor R&D by 2027?"
# For 20 clients at once: 10 questions the article answers (each a generation of about 2 s on 2 cores) and 10 far
# from every article (refused by the relevance floor without the generator), all different.
ANSWERABLE = ["q03", "q11", "q13", "q30", "q34", "q40", "q60", "q64", "q68", "q51"]
OFF_TOPIC = ["What is the boiling point of water at sea level?", "Who won the 2022 FIFA World Cup final?",
             "How long should sourdough bread dough rise before baking?", "Which planet has the most moons?",
             "What is the capital city of Australia?", "How many strings does a standard violin have?",
             "Who painted the Mona Lisa?", "What is the chemical symbol for gold?",
             "How tall is Mount Kilimanjaro?", "Which language has the most native speakers?"]
NEW_ARTICLE = """Veltrana Robotics opens drone factory in Busan
The fictional company Veltrana Robotics announced on Monday that it will invest 47.3 billion won in a new drone \
factory in Busan. The factory will employ 820 workers and open in 2026.
"""
# Open WebUI's own housekeeping prompts (its default title, tags and follow-up templates, shortened guidelines).
HISTORY = (f"### Chat History:\n<chat_history>\nUSER: {QUESTION}\nASSISTANT: South Korea will invest 1.02 trillion "
           "won by 2027 [1].\n</chat_history>")
OPEN_WEBUI_TASKS = {
    "title": "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
             "### Guidelines:\n- The title should clearly represent the main theme or subject of the conversation.\n"
             "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
             "### Examples:\n- { \"title\": \"📉 Stock Market Trends\" },\n" + HISTORY,
    "tags": "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 more "
            "specific subtopic tags.\n### Guidelines:\n- Start with high-level domains\n### Output:\n"
            "JSON format: { \"tags\": [\"tag1\", \"tag2\", \"tag3\"] }\n" + HISTORY,
    "follow_ups": "### Task:\nSuggest 3-5 relevant follow-up questions or prompts that the user might naturally ask "
                  "next in this conversation as a **user**, based on the chat history.\n### Output:\n"
                  "JSON format: { \"follow_ups\": [\"Question 1?\", \"Question 2?\", \"Question 3?\"] }\n" + HISTORY,
}


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    corpus: Path
    log: Path
    early: dict  # what the server answered while its models were still loading

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=ANSWER_TIMEOUT_S,
                             **kwargs)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0,
                                  timeout=ANSWER_TIMEOUT_S)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=30).json()


def start_server(tmp: Path, **env: str) -> tuple[str, subprocess.Popen, Path]:
    """`rag serve` in a new process over a copy of the seed article, on a free loopback port."""
    (tmp / "corpus").mkdir()
    shutil.copy(SEED_ARTICLE, tmp / "corpus")
    port = free_port()
    environment = child_env(RAG_CORPUS_DIR=str(tmp / "corpus"), RAG_INDEX_DIR=str(tmp / "index"), **env)
    log = tmp / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port)], cwd=REPO,
                                   env=environment, stdout=out, stderr=subprocess.STDOUT)
    return f"http://127.0.0.1:{port}", process, log


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_listening(url: str, process: subprocess.Popen, log: Path) -> httpx.Response:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{url}/health", timeout=5)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "rag serve did not start"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("api")
    url, process, log = start_server(tmp, RAG_MAX_QUEUE="20", RAG_MAX_UPLOAD_MB="1")
    try:
        first = wait_listening(url, process, log)
        early = {"health": first.status_code, "health_body": first.json()}
        if first.status_code == 503:  # still loading: a model request is told so, with Retry-After
            reply = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                               json={"model": "rag-news", "messages": [{"role": "user", "content": QUESTION}]})
            early.update(chat=reply.status_code, chat_body=reply.json(), retry_after=reply.headers.get("retry-after"))
        deadline = time.monotonic() + START_TIMEOUT_S
        while (health := httpx.get(f"{url}/health", timeout=30)).status_code != 200:
            assert health.json()["status"] == "loading" and process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the models did not load"
            time.sleep(0.2)
        yield Server(url, process, tmp / "corpus", log, early)
    finally:
        stop(process)


def ask(server: Server, question: str, **kwargs: object):  # noqa: ANN201 - an openai ChatCompletion
    return server.client().chat.completions.create(
        model="rag-news", messages=[{"role": "user", "content": question}], **kwargs)


def extra(completion) -> dict:  # noqa: ANN001 - an openai model: the API's own fields beside OpenAI's
    return completion.model_extra or {}


async def stream_answer(client: openai.AsyncOpenAI, question: str, messages: list | None = None,
                        **extra: object) -> dict:
    """Every frame of a streamed answer, sorted into what a client sees: sources, text pieces, the final frame
    (`extra`: the API's request extras, such as stream_unchecked)."""
    stream = await client.chat.completions.create(
        model="rag-news", stream=True, stream_options={"include_usage": True},
        messages=messages or [{"role": "user", "content": question}], extra_body=extra or None)
    seen: dict = {"order": [], "sources": [], "pieces": [], "final": None, "usage": None}
    async for chunk in stream:
        data = chunk.to_dict()
        if data.get("event"):
            assert data["choices"] == [] and data["event"]["type"] == "source"
            seen["sources"].append(data["event"]["data"])
            seen["order"].append("source")
        elif data.get("usage"):
            seen["usage"] = data["usage"]
        elif data["choices"][0]["delta"].get("content"):
            seen["pieces"].append(data["choices"][0]["delta"]["content"])
            seen["order"].append("text")
        elif data["choices"][0].get("finish_reason"):
            seen["final"] = data
            seen["order"].append("final")
    return seen


def checked_text(seen: dict) -> str:
    """What a client shows at the end: the checked text when the final frame corrects what streamed."""
    correction = seen["final"].get("correction")
    return correction["content"] if correction else "".join(seen["pieces"])


# ---------------------------------------------------------------- answers


def test_while_loading_model_requests_get_503_and_health_says_so(server: Server) -> None:
    assert server.early["health"] == 503, server.early  # the server listens before its models are loaded
    assert server.early["health_body"]["status"] == "loading" and not server.early["health_body"]["models_loaded"]
    assert server.early["chat"] == 503 and server.early["chat_body"]["error"]["code"] == "unavailable"
    assert int(server.early["retry_after"]) >= 1
    health = server.health()
    assert health["status"] == "ok" and health["models_loaded"] and health["index_present"]
    assert health["queue"] == {"running": False, "waiting": 0, "max_queue": 20, "stopped_by_client": 0}


def test_models_lists_the_corpus_with_its_generator_and_embedder(server: Server) -> None:
    client = server.client()
    models = client.models.list().data
    assert [m.id for m in models] == ["rag-news"]
    meta = models[0].model_extra["meta"]
    assert meta["embedder"] == TEST_EMBEDDER and meta["generator"] == (TEST_GENERATOR or Settings().generator)
    assert meta["articles"] == 1 and meta["chunks"] > 1
    title = SEED_ARTICLE.read_text(encoding="utf-8").splitlines()[0].rstrip(".")
    prompts = meta["suggestion_prompts"]  # what Open WebUI offers before the first question: about the article
    assert [p["content"] for p in prompts] == [f'What does the article "{title}" report?']
    assert title.startswith(prompts[0]["title"][0].rstrip("…")) and prompts[0]["title"][1] == "in the articles"
    assert client.models.retrieve("rag-news").id == "rag-news"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_an_answer_carries_its_sources_and_annotations(server: Server) -> None:
    reply = ask(server, QUESTION)
    text = reply.choices[0].message.content
    assert "1.02 trillion won" in text and reply.choices[0].finish_reason == "stop"
    fields = extra(reply)
    assert fields["refused"] is False and fields["refusal_reason"] == "" and fields["partial"] is False
    article = SEED_ARTICLE.read_text(encoding="utf-8")
    assert fields["sources"]
    for source in fields["sources"]:
        assert source["article"] == SEED_ID and source["span"]["text"] in source["text"]
        span = source["span"]
        assert article[span["start"]:span["end"]] == span["text"]  # the offsets are the article's own
    assert any("1.02 trillion" in s["span"]["text"] for s in fields["sources"])
    annotations = reply.choices[0].message.annotations
    assert annotations and {a.type for a in annotations} == {"url_citation"}
    for note in annotations:
        marker = text[note.url_citation.start_index:note.url_citation.end_index]
        assert marker == f"[{note.model_extra['marker']}]" and note.url_citation.url.endswith(f"/v1/articles/{SEED_ID}")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def first_appearances(text: str) -> list[int]:
    """The markers of a text in the order a reader meets them, each once."""
    return list(dict.fromkeys(int(n) for n in re.findall(r"\[(\d+)\]", text)))


def test_a_streamed_answer_is_the_checked_text_after_one_source_per_cited_passage(server: Server) -> None:
    """By default nothing but the role is sent before the checks decide; then the cited passages, each its own
    source numbered as the text numbers it, then the checked text in pieces: what streamed is the final text, with
    no `correction` for a client to apply."""
    seen = asyncio.run(stream_answer(server.async_client(), QUESTION))
    final, text = seen["final"], "".join(seen["pieces"])
    assert final["choices"][0]["finish_reason"] == "stop" and final["refused"] is False and "correction" not in final
    assert text == ask(server, QUESTION).choices[0].message.content and "1.02 trillion won" in text
    assert seen["order"] == ["source"] * len(seen["sources"]) + ["text"] * len(seen["pieces"]) + ["final"]
    markers = first_appearances(text)  # [1], [2], ... in order of first appearance, without gaps
    assert markers == list(range(1, len(markers) + 1)) and markers, text
    assert not re.search(r"\]\s*(?:[,;]|and)?\s+\[|\],", text)  # a list of markers is written "[1][2]"
    assert [s["metadata"][0]["marker"] for s in seen["sources"]] == markers == [s["marker"] for s in final["sources"]]
    article = SEED_ARTICLE.read_text(encoding="utf-8")
    for source in seen["sources"]:  # Open WebUI's shape: one document, its metadata, a relevance in [-1, 1]
        meta = source["metadata"][0]
        assert len(source["document"]) == len(source["distances"]) == 1 and -1 <= source["distances"][0] <= 1
        assert meta["article"] == SEED_ID and source["source"]["name"] == meta["name"]
        assert meta["name"].startswith(meta["title"]) and meta["published"] in meta["name"]
        assert article[meta["start"]:meta["end"]] == meta["sentence"] and meta["sentence"] in source["document"][0]
    assert len({s["metadata"][0]["source"] for s in seen["sources"]}) == len(seen["sources"])  # never merged
    assert seen["usage"]["completion_tokens"] > 0


def test_a_reply_the_checks_refuse_is_never_streamed_unless_asked_for(server: Server) -> None:
    """The seed article gives no head count: the checks refuse the generator's draft. A client that shows every
    piece (Open WebUI) gets the refusal and the closest sentence as its one source; with `stream_unchecked` the
    draft streams as it is generated and the last frame's `correction` replaces it."""
    question = "How many employees does Samsung Electronics have?"
    seen = asyncio.run(stream_answer(server.async_client(), question))
    assert "".join(seen["pieces"]) == REFUSAL and seen["final"]["refused"] and "correction" not in seen["final"]
    assert seen["order"] == ["source"] + ["text"] * len(seen["pieces"]) + ["final"]
    (source,) = seen["sources"]
    meta = source["metadata"][0]
    assert meta["name"] == source["source"]["name"] and meta["name"].startswith("Closest in the articles: ")
    assert meta["closest"] is True and meta["title"] in meta["name"] and meta["sentence"] in source["document"][0]
    draft = asyncio.run(stream_answer(server.async_client(), question, stream_unchecked=True))
    assert draft["final"]["correction"]["content"] == REFUSAL != "".join(draft["pieces"]), draft["pieces"]
    assert draft["order"].index("text") < draft["order"].index("final")


def test_a_question_the_articles_do_not_answer_is_a_normal_completion_saying_so(server: Server) -> None:
    reply = ask(server, "Who won the 2022 FIFA World Cup final?")
    assert reply.choices[0].message.content == REFUSAL and reply.choices[0].message.refusal is None
    fields = extra(reply)
    assert fields["refused"] is True and fields["refusal_reason"]
    assert [s["closest"] for s in fields["sources"]] == [True]  # the closest sentence, as a source
    assert reply.choices[0].message.annotations == []


def test_a_follow_up_through_messages_uses_the_conversation(server: Server) -> None:
    first = ask(server, "Who did Zuckerberg meet at the Yongsan Presidential Palace?")
    messages = [{"role": "user", "content": "Who did Zuckerberg meet at the Yongsan Presidential Palace?"},
                {"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "When did he last visit South Korea before this trip?"}]
    follow = server.client().chat.completions.create(model="rag-news", messages=messages)
    assert "zuckerberg" in extra(follow)["rewritten_question"].lower()
    assert "2014" in follow.choices[0].message.content and not extra(follow)["refused"]


def test_housekeeping_prompts_get_short_json_replies_not_refusals(server: Server) -> None:
    for key, prompt in OPEN_WEBUI_TASKS.items():
        started = time.perf_counter()
        reply = ask(server, prompt)
        assert time.perf_counter() - started < 5  # no model, no queue
        value = json.loads(reply.choices[0].message.content)[key]
        assert value and REFUSAL not in reply.choices[0].message.content
        if key == "title":
            assert "South Korea" in value and len(value.split()) <= 5
        elif key == "follow_ups":
            assert all(q.endswith("?") for q in value)
    seen = asyncio.run(stream_answer(server.async_client(), OPEN_WEBUI_TASKS["tags"]))
    assert "South Korea" in json.loads("".join(seen["pieces"]))["tags"] and seen["sources"] == []


# ---------------------------------------------------------------- errors


def test_bad_requests_get_openai_errors_with_real_statuses(server: Server) -> None:
    client = server.client()
    bad = [
        ([{"role": "user", "content": "   "}], {}),  # empty question
        ([{"role": "user", "content": "Why? " * 500}], {}),  # over max_question_chars
        ([{"role": "assistant", "content": "Hello"}], {}),  # no question last
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}], {}),
        ([{"role": "robot", "content": "Hi"}], {}),  # malformed message
        ([], {}),
        ([{"role": "user", "content": QUESTION}], {"extra_body": {"top_k": 0}}),
        ([{"role": "user", "content": QUESTION}], {"max_tokens": 0}),
    ]
    for messages, options in bad:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="rag-news", messages=messages, **options)
        error = caught.value.body
        assert set(error) >= {"message", "type", "code"} and error["type"] == "invalid_request_error", error
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert "rag-news" in caught.value.body["message"]
    gone = httpx.delete(f"{server.url}/v1/articles/no-such-article.txt", timeout=30)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    big = httpx.post(f"{server.url}/v1/articles", timeout=60,
                     files={"files": ("big.txt", b"Title\n" + b"word " * 300_000, "text/plain")})  # 1.5 MB > 1 MB
    assert big.status_code == 413 and "max_upload_mb" in big.json()["error"]["message"]
    assert not (server.corpus / "big.txt").exists()
    wrong = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json", timeout=30,
                       headers={"Content-Type": "application/json"})
    assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "invalid_request_error"


def test_a_full_queue_answers_429_with_retry_after(server: Server) -> None:
    """21 places (one answering, max_queue 20 waiting): of 25 streams opened at once, 4 are turned away at once;
    the others are closed again, which frees their places, and the next request is served."""
    questions = [q.question for q in load_questions(REPO / "corpus" / "eval" / "questions.jsonl")
                 if not q.unanswerable][:25]

    async def burst() -> list:
        client = server.async_client()
        opened = await asyncio.gather(*(client.chat.completions.create(
            model="rag-news", stream=True, messages=[{"role": "user", "content": q}]) for q in questions),
            return_exceptions=True)
        for stream in opened:
            if not isinstance(stream, Exception):
                await stream.close()
        return opened

    opened = asyncio.run(burst())
    refused = [o for o in opened if isinstance(o, openai.RateLimitError)]
    assert len(refused) == 4 and all(not isinstance(o, Exception) or o in refused for o in opened), opened
    assert all(int(r.response.headers["retry-after"]) >= 1 and r.body["code"] == "busy" for r in refused)
    assert wait_idle(server)["waiting"] == 0
    assert "1.02 trillion won" in ask(server, QUESTION).choices[0].message.content


def wait_idle(server: Server, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (queue := server.health()["queue"])["running"] or queue["waiting"]:
        assert time.monotonic() < deadline, queue
        time.sleep(0.1)
    return queue


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server: Server) -> None:
    client = server.client()
    before = wait_idle(server)["stopped_by_client"]
    stream = client.chat.completions.create(model="rag-news", stream=True, extra_body={"stream_unchecked": True},
                                            messages=[{"role": "user", "content": "Who did Zuckerberg meet in Seoul?"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the first piece of the draft (stream_unchecked): the generator is running
    stream.close()
    started = time.monotonic()
    queue = wait_idle(server, timeout=30)  # the generation stops at its next piece and gives back its lock
    assert queue["stopped_by_client"] == before + 1
    stopped_s = time.monotonic() - started
    reply = ask(server, QUESTION)
    assert "1.02 trillion won" in reply.choices[0].message.content
    print(f"generation stopped {stopped_s:.2f} s after the client left")


def test_twenty_streaming_clients_at_once_each_get_their_own_answer(server: Server) -> None:
    by_id = {q.id: q for q in load_questions(REPO / "corpus" / "eval" / "questions.jsonl")}
    questions = [by_id[i] for i in ANSWERABLE] + [None] * len(OFF_TOPIC)
    texts = [q.question for q in questions if q] + OFF_TOPIC
    assert len(set(texts)) == 20

    async def together() -> list[dict]:
        client = server.async_client()
        return await asyncio.gather(*(stream_answer(client, text) for text in texts))

    started = time.perf_counter()
    results = asyncio.run(together())
    for question, text, seen in zip(questions, texts, results, strict=True):
        final = seen["final"]
        assert final["rewritten_question"] == text  # this client's own question was answered
        shown = checked_text(seen)
        if question is None:
            assert final["refused"] and shown == REFUSAL, (text, shown)
            # no retrieved passage is offered as a source, only the closest sentence of the refusal
            assert [s["metadata"][0].get("closest") for s in seen["sources"]] == [True] * len(final["sources"])
        else:
            assert answer_found(shown, question) and not final["refused"], (text, shown)
            assert seen["sources"] and all(s["article"] == SEED_ID for s in final["sources"])
    print(f"20 streams at once: {time.perf_counter() - started:.1f} s")


# ---------------------------------------------------------------- articles, retrieval, embeddings


def test_an_upload_and_a_delete_through_the_api_reach_the_next_answer(server: Server) -> None:
    question = "How much will Veltrana Robotics invest in its Busan drone factory?"
    added = httpx.post(f"{server.url}/v1/articles", timeout=ANSWER_TIMEOUT_S,
                       files={"files": ("veltrana.txt", NEW_ARTICLE.encode(), "text/plain")})
    assert added.status_code == 201 and added.json()["added"] == ["veltrana.txt"], added.text
    listed = httpx.get(f"{server.url}/v1/articles", timeout=30).json()["data"]
    assert {a["id"] for a in listed} == {SEED_ID, "veltrana.txt"}
    reply = ask(server, question)
    assert "47.3 billion won" in reply.choices[0].message.content
    assert {s["article"] for s in extra(reply)["sources"]} == {"veltrana.txt"}
    again = httpx.post(f"{server.url}/v1/articles", timeout=ANSWER_TIMEOUT_S,
                       files={"files": ("copy.txt", NEW_ARTICLE.encode(), "text/plain")})
    assert again.status_code == 201 and again.json()["duplicates"] and not again.json()["added"]

    deleted = httpx.delete(f"{server.url}/v1/articles/veltrana.txt", timeout=ANSWER_TIMEOUT_S)
    assert deleted.status_code == 200 and deleted.json()["removed"] == ["veltrana.txt"]
    assert not (server.corpus / "veltrana.txt").exists()
    assert httpx.get(f"{server.url}/v1/articles/veltrana.txt", timeout=30).status_code == 404
    after = ask(server, question)
    assert "47.3" not in after.choices[0].message.content
    assert all(s["article"] == SEED_ID for s in extra(after)["sources"])
    last = httpx.delete(f"{server.url}/v1/articles/{SEED_ID}", timeout=30)  # the last article: refused, kept
    assert last.status_code == 400 and (server.corpus / SEED_ID).exists()


def test_retrieve_returns_scored_passages(server: Server) -> None:
    found = httpx.post(f"{server.url}/v1/retrieve", json={"query": QUESTION, "top_k": 2}, timeout=60)
    assert found.status_code == 200
    passages = found.json()["data"]
    assert len(passages) == 2 and passages[0]["doc_id"] == SEED_ID and "1.02 trillion" in passages[0]["text"]
    assert passages[0]["relevance"] >= passages[1]["relevance"] > 0 and "dense_similarity" in passages[0]["scores"]
    empty = httpx.post(f"{server.url}/v1/retrieve", json={"query": ""}, timeout=30)
    assert empty.status_code == 400


def test_embeddings_come_from_the_project_embedder(server: Server) -> None:
    client = server.client()
    texts = ["South Korea invests in AI chips.", "Sourdough needs a long rise."]
    vectors = client.embeddings.create(model="rag-news", input=texts).data  # the client asks for base64
    floats = client.embeddings.create(model=TEST_EMBEDDER, input=texts, encoding_format="float").data
    assert len(vectors) == 2 and len(vectors[0].embedding) == {"minilm": 384}.get(TEST_EMBEDDER, 768)
    assert np.allclose(vectors[0].embedding, floats[0].embedding, atol=1e-6)
    assert abs(np.linalg.norm(vectors[0].embedding) - 1) < 1e-3
    question = client.embeddings.create(model="rag-news", input=QUESTION, encoding_format="float").data[0].embedding
    assert np.dot(question, floats[0].embedding) > np.dot(question, floats[1].embedding)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="rag-news", input=[""])


# ---------------------------------------------------------------- keys and exposure


def test_keys_are_enforced_when_set(tmp_path: Path) -> None:
    """A second server with keys whose models cannot load (so that it never runs a model beside the first): every
    /v1 request needs a key, checked before anything else; /health needs none and says why it is not ready."""
    url, process, log = start_server(tmp_path, RAG_API_KEYS="key-one, key-two", RAG_EMBEDDER="no-such-embedder")
    try:
        wait_listening(url, process, log)
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{url}/health", timeout=10).json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert health["status"] == "failed" and "no-such-embedder" in health["error"]

        def client(key: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

        for key in ("wrong", "key-one,key-two", "key-on"):
            with pytest.raises(openai.AuthenticationError) as caught:
                client(key).models.list()
            assert caught.value.response.headers["www-authenticate"] == "Bearer"
            assert caught.value.body["type"] == "authentication_error"
        for path in ("/v1/models", "/v1/articles"):  # no key at all
            assert httpx.get(f"{url}{path}", timeout=10).status_code == 401
        described = httpx.get(f"{url}/openapi.json", timeout=10).json()  # the key, as configured, in the schema
        assert described["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert "401" in described["paths"]["/v1/models"]["get"]["responses"]
        assert [m.id for m in client("key-two").models.list()] == ["rag-news"]
        with pytest.raises(openai.InternalServerError) as caught:  # a key, but no models: 503
            client("key-one").chat.completions.create(model="rag-news",
                                                      messages=[{"role": "user", "content": QUESTION}])
        assert caught.value.status_code == 503 and "no-such-embedder" in caught.value.body["message"]
    finally:
        stop(process)


def test_keys_are_optional_on_loopback(server: Server) -> None:
    plain = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert plain.status_code == 200  # no RAG_API_KEYS, 127.0.0.1: no key needed
    docs = httpx.get(f"{server.url}/docs", timeout=30)
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert docs.status_code == 200 and "/v1/chat/completions" in schema["paths"] and "/health" in schema["paths"]
    assert "securitySchemes" not in schema["components"]  # no key configured: none declared


def test_a_non_local_host_needs_keys(tmp_path: Path) -> None:
    environment = child_env()
    done = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--host", "0.0.0.0", "--port", "1"], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "RAG_API_KEYS" in done.stderr and "Traceback" not in done.stderr
    shown = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--help"], cwd=REPO, env=environment,
                           capture_output=True, text=True, timeout=120)
    assert "RAG_API_KEYS" in shown.stdout and "Bearer" in shown.stdout
