"""The API's OpenAPI document tells the truth, checked on the app in-process (no model is loaded): each route's error
statuses with OpenAI's error body and no 422, the limits the server enforces as the schema's constraints (the
question's pattern accepts exactly what the server's cleaning keeps), and the bearer key only when keys are set.
The contract itself, request by request against a real server, is tests/server/test_contract.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.answering.flow import QuestionError, clean_question, question_pattern
from rag.server.app import create_app
from rag.server.openapi import ErrorBody
from rag.settings import Settings

pytestmark = pytest.mark.unit

QUESTION = "How much will South Korea invest in AI semiconductor R&D by 2027?"
ERRORS = {"/v1/chat/completions": {"400", "404", "413", "429", "500", "503"},
          "/v1/retrieve": {"400", "413", "429", "500", "503"},
          "/v1/embeddings": {"400", "404", "413", "429", "500", "503"},
          "/v1/models/{model}": {"404", "500"}, "/v1/models": {"500"}, "/v1/articles/{doc_id}": {"404", "500"}}


def document(tmp_path: Path, **changes: object) -> dict:
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index").replace(**changes)
    return TestClient(create_app(settings)).get("/openapi.json").json()


def operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_every_error_status_is_documented_with_openai_s_error_body_and_no_422(tmp_path: Path) -> None:
    doc = document(tmp_path)
    found = operations(doc)
    assert len(found) == 10
    for (method, path), op in found.items():
        statuses = set(op["responses"])
        assert "422" not in statuses, (method, path)
        if path in ERRORS and method != "DELETE":
            assert ERRORS[path] <= statuses, (method, path, statuses)
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and path != "/health":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        for status in {"429", "503"} & statuses - ({"503"} if path == "/health" else set()):
            assert "Retry-After" in op["responses"][status]["headers"], (method, path)
    assert found[("DELETE", "/v1/articles/{doc_id}")]["responses"].keys() >= {"400", "404", "429", "503"}
    assert found[("POST", "/v1/articles")]["responses"].keys() >= {"201", "400", "413", "429", "503"}
    assert set(found[("GET", "/health")]["responses"]) == {"200", "503"}
    streamed = found[("POST", "/v1/chat/completions")]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(streamed)
    assert not {"HTTPValidationError", "ValidationError"} & set(doc["components"]["schemas"])


def test_what_the_schema_calls_invalid_is_a_400_with_the_documented_body(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")))
    ask = [{"role": "user", "content": QUESTION}]
    invalid = [
        ("/v1/chat/completions", {"messages": ask, "top_k": "3"}),  # strict types: "3" is not an integer
        ("/v1/chat/completions", {"messages": ask, "stream": "true"}),
        ("/v1/chat/completions", {"messages": ask, "max_tokens": 1025}),
        ("/v1/chat/completions", {"messages": ask, "since": " 2024-05-03"}),  # not format: date
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": [{"type": "image_url"}]}, *ask]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        ("/v1/embeddings", {"input": ["a text", " \u3000 "]}),
        ("/v1/embeddings", {"input": []}),
        ("/v1/retrieve", {"query": QUESTION, "top_k": 51}),
    ]
    for path, body in invalid:
        reply = client.post(path, json=body)
        assert reply.status_code == 400, (path, body, reply.text)
        assert ErrorBody.model_validate(reply.json()).error.type == "invalid_request_error"
    fine = client.post("/v1/chat/completions", json={"messages": ask, "since": "", "until": None, "top_k": 3,
                                                     "max_tokens": 12.0})  # JSON Schema's integer: 12.0 too
    assert fine.status_code == 503  # valid: past every check, only the models are missing
    wrong_model = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": ask})
    assert wrong_model.status_code == 404 and ErrorBody.model_validate(wrong_model.json()).error.code == "not_found"


def test_security_is_declared_only_when_keys_are_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_doc = document(tmp_path)
    assert "securitySchemes" not in open_doc["components"]
    assert all("security" not in op and "401" not in op["responses"] for op in operations(open_doc).values())
    monkeypatch.setenv("RAG_API_KEYS", "key-one")
    keyed = document(tmp_path)
    assert keyed["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for (_, path), op in operations(keyed).items():
        if path.startswith("/v1/"):
            assert op["security"] == [{"HTTPBearer": []}] and "WWW-Authenticate" in op["responses"]["401"]["headers"]
        else:
            assert "security" not in op and "401" not in op["responses"]  # /health needs no key


def test_the_limits_come_from_the_settings(tmp_path: Path) -> None:
    doc = document(tmp_path, max_question_chars=300, max_upload_mb=2.5)
    schemas = doc["components"]["schemas"]
    query = schemas["RetrieveRequest"]["properties"]["query"]
    assert query["maxLength"] == 300 and query["pattern"] == question_pattern()
    assert "at most 300 characters" in schemas["ChatRequest"]["properties"]["messages"]["description"]
    assert schemas["ChatRequest"]["properties"]["model"]["enum"] == ["rag-news"]
    assert schemas["EmbeddingRequest"]["properties"]["model"]["enum"] == ["rag-news", Settings().embedder]
    files = next(s for name, s in schemas.items() if name.startswith("Body_upload"))["properties"]["files"]
    assert (files["minItems"], files["maxItems"]) == (1, 16) and "2.5 MB" in files["description"]
    assert {"type": "string", "format": "date"} in schemas["ChatRequest"]["properties"]["since"]["anyOf"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.text(max_size=12), st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]),
                                              max_size=6)))
def test_the_question_pattern_accepts_exactly_what_the_server_keeps(text: str) -> None:
    try:
        kept = bool(clean_question(text, Settings()))
    except QuestionError:
        kept = False
    assert bool(re.search(question_pattern(), text)) == kept, repr(text)
