"""The API's OpenAPI document as the server behaves: each route's error statuses with OpenAI's error body, the limits
the server enforces, and the bearer key declared only when keys are configured.

FastAPI's own document lists a 422 that this server never sends (validation errors are 400s, see
`install_error_handlers` in app.py) and none of the statuses it does send, and it cannot know the limits that come
from the settings. `install_openapi` gives the app a document made from FastAPI's with those corrected; the contract
test (tests/server/test_contract.py, schemathesis) holds the server to it.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from rag.answering.flow import question_pattern
from rag.indexing.articles import upload_limit_mb
from rag.server.wire import MODEL_ID
from rag.settings import Settings

MAX_UPLOAD_FILES = 16


class ErrorDetail(BaseModel):
    """What went wrong, as OpenAI says it."""

    message: str = Field(description="what is wrong, in words meant for the user")
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, "
                                  "not_found_error, rate_limit_error, service_unavailable, server_error")
    code: str = Field(description="this API's error kind: bad_input, not_found, too_large, unauthorized, busy, "
                                  "unavailable, failure, unexpected, method_not_allowed")
    param: str | None = Field(None, description="the request field at fault, when one is")


class ErrorBody(BaseModel):
    """Every error of the API: OpenAI's `{"error": {...}}`."""

    error: ErrorDetail


class QueueState(BaseModel):
    """The queue for the models: one request running, up to `max_queue` waiting."""

    running: bool
    waiting: int
    max_queue: int
    stopped_by_client: int = Field(description="generations stopped because their client went away")


class Health(BaseModel):
    """Whether the models are loaded and the index present; the queue."""

    status: Literal["loading", "ok", "failed"]
    models_loaded: bool
    index_present: bool
    error: str | None = Field(description="why the models could not be loaded")
    generator: str
    embedder: str
    queue: QueueState


WHY = {
    400: "bad input: the request cannot be served as asked (the message names the field)",
    401: "no key, or a wrong one: send `Authorization: Bearer KEY`",
    404: "no such model or article",
    413: "the body, or an uploaded file, is larger than the limit",
    429: "the queue for the models is full; try again after Retry-After seconds",
    500: "a bug: the details are in the server's log",
    503: "the models are loading (or could not be loaded), or the generator server is down; try again after "
         "Retry-After seconds",
}
SECONDS = {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "description": "seconds to wait, at least 1"}
HEADERS = {401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
           429: {"Retry-After": SECONDS}, 503: {"Retry-After": SECONDS}}
# One server-sent event of a streamed completion (OpenAPI 3.1: a text/event-stream schema describes each event).
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "a `chat.completion.chunk` as JSON (or OpenAI's error body), and "
                                              "`[DONE]` last"},
    "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}
STREAMED = {200: {"description": "the completion, or with `stream` its server-sent `chat.completion.chunk` frames",
                  "content": {"text/event-stream": {"schema": SSE_EVENT}}}}
QUESTION_RULE = ("the conversation, at least one message: the last is the question, a user message whose text (a "
                 "string, or its text parts joined) holds something besides white space and is at most {limit} "
                 "characters long (the setting max_question_chars); the earlier user and assistant turns are its "
                 "history. A front-end's housekeeping task (a message opening with `### Task:`) is answered "
                 "whatever its length.")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses` for the error statuses it can answer, each with OpenAI's error body."""
    return {status: {"model": ErrorBody, "description": WHY[status], **({"headers": HEADERS[status]}
                                                                       if status in HEADERS else {})}
            for status in statuses}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the truthful document at /openapi.json: made once for each state of the keys (read from the
    environment at each request, as `authorize` reads them)."""
    made: dict[bool, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        keyed = bool(settings.api_keys())
        if keyed not in made:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            made[keyed] = truthful(document, settings, keyed)
        return made[keyed]

    app.openapi = openapi  # type: ignore[method-assign]


def truthful(document: dict[str, Any], settings: Settings, keyed: bool) -> dict[str, Any]:
    """FastAPI's document without the 422 it adds, with the settings' limits, and with the bearer key and its 401
    only when keys are set."""
    document = copy.deepcopy(document)
    for operation in _operations(document):
        operation["responses"].pop("422", None)
        if not keyed:
            operation.pop("security", None)
            operation["responses"].pop("401", None)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if not keyed:
        components.pop("securitySchemes", None)
    _limits(schemas, settings)
    return document


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [operation for item in document.get("paths", {}).values() for operation in item.values()
            if isinstance(operation, dict) and "responses" in operation]


def _limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The limits that come from the settings: the question's length, the embedder's name, the upload's files."""
    question = {"pattern": question_pattern(), "maxLength": settings.max_question_chars}
    if "RetrieveRequest" in schemas:
        schemas["RetrieveRequest"]["properties"]["query"].update(question)
    if "ChatRequest" in schemas:
        messages = schemas["ChatRequest"]["properties"]["messages"]
        messages["description"] = QUESTION_RULE.format(limit=settings.max_question_chars)
    if "EmbeddingRequest" in schemas:
        schemas["EmbeddingRequest"]["properties"]["model"]["enum"] = [MODEL_ID, settings.embedder]
    for name, schema in schemas.items():
        if name.startswith("Body_upload_articles"):
            schema["properties"]["files"].update(
                minItems=1, maxItems=MAX_UPLOAD_FILES,
                description=f"1 to {MAX_UPLOAD_FILES} files, .txt, .md, .html or .pdf, each at most "
                            f"{upload_limit_mb(settings):g} MB (413 over it)")


__all__ = ["ErrorBody", "Health", "install_openapi", "errors"]
