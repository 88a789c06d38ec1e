"""The OpenAI-compatible HTTP API (`rag serve`, and beside the chat page in `rag chat`), on FastAPI.

One request uses the models at a time (an asyncio lock); at most `max_queue` wait, and beyond that a request is told
429 with Retry-After at once. Blocking library calls run in worker threads; a streamed answer is pulled from
`rag.stream_answer` piece by piece, so a client that goes away stops its generation between two pieces (the stream
is closed, which releases the generator's lock). Models load in the background after the server starts listening:
until they are ready every model endpoint answers 503 with Retry-After, and /health says so. Keys come from the
environment variable named by `api_keys_env` (RAG_API_KEYS): when set, every /v1 request needs
`Authorization: Bearer KEY`; without keys the API may listen only on a loopback address (`--no-auth` aside).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, FastAPI, File, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rag.answering.flow import clean_question
from rag.collection import Collection
from rag.errors import EXPECTED, BadInput, Busy, NotFound, RagError, Unauthorized, Unavailable, kind_of, outcome
from rag.indexing.articles import UnknownArticle, check_upload_size
from rag.indexing.build import current_build, index_folder
from rag.ingest.reading import MB
from rag.retrieval import calibration
from rag.server.housekeeping import housekeeping_reply, is_housekeeping, suggested_prompts
from rag.server.openapi import MAX_UPLOAD_FILES, STREAMED, Health, errors, install_openapi
from rag.server.wire import (
    MODEL_ID,
    ChatRequest,
    DateRange,
    EmbeddingRequest,
    RetrieveRequest,
    by_article,
    chunk,
    cited_events,
    completion,
    embedding_data,
    error_body,
    final_chunk,
    new_id,
    reply,
    source_event,
    split_messages,
    text_pieces,
    usage_of,
)
from rag.settings import Settings
from rag.types import Answer, ArticleInfo, IndexReport, Passage, Retrieval

log = logging.getLogger(__name__)

T = TypeVar("T")
JSON_BODY_LIMIT = 4 * 1024 * 1024  # a chat request: 2,000-character questions and a few turns of history
UPLOAD_BODY_LIMIT = 256 * MB  # a bound on the whole body; each file is then checked against max_upload_mb
DISCONNECT_POLL_S = 0.25
_END = object()


# ---------------------------------------------------------------- state: models, queue


class Gate:
    """One request uses the models at a time; at most `max_queue` wait for their turn, more are Busy (429)."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.admitted = 0  # waiting or running
        self.running = False
        self.stopped = 0  # generations stopped because their client went away
        self.mean_s = 2.0  # a moving average of a turn's length, for Retry-After
        self._lock = asyncio.Lock()

    @property
    def waiting(self) -> int:
        return self.admitted - int(self.running)

    def retry_after(self) -> int:
        return max(1, math.ceil(self.mean_s * (self.waiting + 1)))

    def admit(self) -> Ticket:
        """A place in the queue, or Busy when every place is taken (checked before anything waits)."""
        if self.admitted > self.max_queue:
            raise Busy(f"the server is busy: {self.waiting} requests are waiting for the models (setting max_queue "
                       f"{self.max_queue}); try again in {self.retry_after()} s")
        self.admitted += 1
        return Ticket(self)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            self.running, started = True, time.monotonic()
            try:
                yield
            finally:
                self.running = False
                self.mean_s = 0.8 * self.mean_s + 0.2 * (time.monotonic() - started)


class Ticket:
    """An admitted request's place in the queue, given back exactly once."""

    def __init__(self, gate: Gate) -> None:
        self._gate: Gate | None = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate.admitted -= 1
            self._gate = None


class ApiState:
    """What every request shares: the settings, the corpus, the queue and whether the models are loaded."""

    def __init__(self, settings: Settings, corpus: Path | None) -> None:
        self.settings = settings
        self.corpus = corpus
        self.collection = Collection(corpus, settings)
        self.gate = Gate(settings.max_queue)
        self.ready = threading.Event()
        self.failure = ""
        self.started = time.time()

    def load(self) -> None:
        """Load the models and the index (in a background thread); a failure is kept for /health and 503s."""
        try:
            self.collection.warm_up()
            self.ready.set()
        except Exception as exc:  # noqa: BLE001 - reported by /health and every model request
            log.exception("loading the models failed")
            self.failure = f"the models could not be loaded: {exc}"

    def require_ready(self) -> None:
        if self.failure:
            raise Unavailable(self.failure)
        if not self.ready.is_set():
            raise Unavailable("the models are still loading; try again shortly")

    def index_present(self) -> bool:
        return current_build(index_folder(self.settings, self.corpus)) is not None


def get_state(request: Request) -> ApiState:
    return request.app.state.rag


State = Annotated[ApiState, Depends(get_state)]


bearer = HTTPBearer(auto_error=False, description="one of the keys in the environment variable RAG_API_KEYS "
                    "(comma-separated); needed only when keys are set")


async def authorize(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:
    """With keys set, every /v1 request needs one of them as a Bearer token (compared in constant time)."""
    keys = get_state(request).settings.api_keys()
    if not keys:
        return
    given = (credentials.credentials if credentials else "").encode()
    if not any(hmac.compare_digest(given, key.encode()) for key in keys):
        raise Unauthorized("missing or wrong API key: send the header \"Authorization: Bearer KEY\" with one of the "
                           f"keys in {get_state(request).settings.api_keys_env}" if credentials
                           else "no API key: send the header \"Authorization: Bearer KEY\"")


router = APIRouter(prefix="/v1", dependencies=[Depends(authorize)], responses=errors(401, 500))
health_router = APIRouter()


# ---------------------------------------------------------------- running blocking work


async def pump(stream: Iterator[T]) -> AsyncIterator[T]:
    """The items of a blocking iterator, each pulled in a worker thread. However the caller stops (done, an error, a
    client gone), the iterator is closed, in a thread and shielded from cancellation: closing `stream_answer`
    closes the generator's stream, which gives back its lock."""
    try:
        while (item := await anyio.to_thread.run_sync(next, stream, _END)) is not _END:
            yield item
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)


async def in_turn(state: ApiState, work: Callable[[], T]) -> T:
    """Run blocking model work in a worker thread when the request's turn comes."""
    async with state.gate.turn():
        return await anyio.to_thread.run_sync(work)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it when the client goes away (a waiting request then leaves the queue)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ClientGone
    return task.result()


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class EventStream(StreamingResponse):
    """Server-sent events whose body is always closed, and the request's ticket given back, however it ends (also
    when the client is gone before the first frame was sent)."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[str], ticket: Ticket | None = None) -> None:
        super().__init__(frames, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._frames = frames
        self._ticket = ticket

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._frames.aclose()  # type: ignore[attr-defined]
            if self._ticket is not None:
                self._ticket.release()


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------- chat completions


def check_model(model: str, also: tuple[str, ...] = ()) -> None:
    if model not in (MODEL_ID, *also):
        raise NotFound(f"the model {model!r} does not exist: this server has {', '.join((MODEL_ID, *also))}")


@dataclass(frozen=True)
class Asked:
    """One question to answer: its text, the earlier turns, the settings and the publication dates it keeps to."""

    question: str
    history: list[dict[str, str]]
    settings: Settings  # the server's settings with the request's `changes`
    changes: dict[str, Any]
    since: date | None = None
    until: date | None = None


def asked_text(text: str, settings: Settings) -> str:
    """A question (or a retrieval query) as sent: at most `max_question_chars` characters counted as sent (as the
    schema's maxLength counts them), and not empty once cleaned (`clean_question`)."""
    if len(text) > settings.max_question_chars:
        raise BadInput(f"the question is {len(text)} characters long; the limit is {settings.max_question_chars} "
                       "(setting max_question_chars)")
    return clean_question(text, settings)


def answer_changes(body: ChatRequest) -> dict[str, Any]:
    """The settings a request changes for its own answer (top_k, the reply's length, streaming)."""
    changes: dict[str, Any] = {}
    if body.top_k:
        changes["top_k"] = body.top_k
    if body.max_completion_tokens or body.max_tokens:
        changes["max_new_tokens"] = body.max_completion_tokens or body.max_tokens
    if body.stream_unchecked is not None:
        changes["stream_unchecked"] = body.stream_unchecked
    return changes


@router.post("/chat/completions", summary="Answer the last user message from the articles (OpenAI chat completions)",
             max_body_size=JSON_BODY_LIMIT, responses={**STREAMED, **errors(400, 404, 413, 429, 503)})
async def chat_completions(body: ChatRequest, request: Request, state: State) -> Response:
    """The last user message is the question and the earlier turns its history; the reply is the checked answer of
    `rag.answer`, with `message.annotations`, `sources` (each with its article's `published` date and `outlet`,
    and `also_in`: the other articles holding a near-copy), `refused`, `refusal_reason`, `partial`, `conflict`
    and `conflict_groups` (the articles give different values: one group per value, its markers and sources) and
    `dates` (the publication dates the answer kept to). The extras `since` / `until` (YYYY-MM-DD, inclusive) keep
    only articles published in that range; a bad date is a 400 naming the field. With `stream`, server-sent
    `chat.completion.chunk` frames: the role; once the checks have decided, one `source` event per cited passage in
    the order of its marker (a refusal: its closest sentence), the checked text in pieces, then a frame with the
    finish reason and the fields above; then `data: [DONE]`. With the extra `stream_unchecked` (or the setting): one
    `source` event per article of the retrieved passages, the text as it is generated, and in the last frame
    `correction.content` when the checked text differs from what streamed."""
    check_model(body.model)
    question, history = split_messages(body.messages)
    if is_housekeeping(question):  # no queue: follow-ups need an embedding and a search at most, no generator
        loaded = state.ready.is_set() and not state.failure
        text = await anyio.to_thread.run_sync(housekeeping_reply, question, state.settings if loaded else None,
                                              state.corpus)
        return EventStream(_text_frames(text, body.model)) if body.stream else JSONResponse(reply(text, body.model))
    state.require_ready()
    changes = answer_changes(body)
    settings = state.settings.replace(**changes)
    question = asked_text(question, settings)  # an empty or over-long question is a 400 before it queues
    asked = Asked(question, history, settings, changes, body.since, body.until)
    ticket = state.gate.admit()
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    if body.stream:
        return EventStream(_answer_frames(state, asked, body.model, include_usage), ticket)
    try:
        final = await unless_disconnected(request, _final_answer(state, asked))
    except ClientGone:
        state.gate.stopped += 1
        return Response(status_code=499)
    finally:
        ticket.release()
    return JSONResponse(completion(final, str(request.base_url), settings.max_new_tokens, body.model))


async def _answer_events(state: ApiState, asked: Asked) -> AsyncIterator[Retrieval | str | Answer]:
    async with state.gate.turn():
        async for event in pump(state.collection.stream_answer(asked.question, asked.history, asked.since,
                                                               asked.until, **asked.changes)):
            yield event


async def _final_answer(state: ApiState, asked: Asked) -> Answer:
    final = None
    async with contextlib.aclosing(_answer_events(state, asked)) as events:
        async for event in events:
            final = event if isinstance(event, Answer) else final
    assert final is not None
    return final


async def _answer_frames(state: ApiState, asked: Asked, model: str, include_usage: bool) -> AsyncIterator[str]:
    """The frames of a streamed answer. By default nothing but the role is sent until the checks have decided: a
    client that shows every piece (Open WebUI ignores `correction`) never shows a reply they reject. With
    `stream_unchecked`, the retrieved passages and the reply as it is generated, then `correction`."""
    stream_id, streamed, finished = new_id(), [], False  # not finished: the client went away
    settings, question = asked.settings, asked.question
    unchecked = settings.stream_unchecked
    yield sse(chunk(stream_id, model, {"role": "assistant", "content": ""}))
    try:
        async with contextlib.aclosing(_answer_events(state, asked)) as events:
            async for event in events:
                if isinstance(event, Answer):
                    # unchecked: the retrieved passages were sent already; only a refusal's closest sentence is new
                    for source in cited_events(event) if event.refused or not unchecked else []:
                        yield sse(chunk(stream_id, model, event=source))
                    for piece in [] if unchecked else text_pieces(event.text):
                        streamed.append(piece)
                        yield sse(chunk(stream_id, model, {"content": piece}))
                    yield sse(final_chunk(stream_id, model, event, "".join(streamed), settings.max_new_tokens))
                    if include_usage:
                        yield sse(chunk(stream_id, model, usage=usage_of(event)))
                elif not unchecked:
                    continue  # what was retrieved and the draft: nothing is shown before the checks decide
                elif isinstance(event, Retrieval):
                    floor = calibration(settings).min_relevance  # below it the answer is refused unread: no sources
                    if max((p.relevance for p in event.passages), default=0.0) >= floor:
                        for passages in by_article(event.passages):
                            yield sse(chunk(stream_id, model, event=source_event(passages)))
                else:
                    streamed.append(event)
                    yield sse(chunk(stream_id, model, {"content": event}))
            finished = True
    except EXPECTED as exc:  # after the headers: an error frame, as OpenAI sends one mid-stream
        finished = True
        log.warning("answering failed: %s", exc)
        yield sse(error_body(str(exc), outcome(exc).error_type, kind_of(exc)))
    except Exception as exc:  # noqa: BLE001 - a bug: said in the stream, the traceback in the log
        finished = True
        log.exception("answering %r failed", question)
        yield sse(error_body(f"something went wrong on the server ({type(exc).__name__}); the details are in its "
                             "log", "server_error", "unexpected"))
    finally:
        state.gate.stopped += not finished
    yield sse("[DONE]")


async def _text_frames(text: str, model: str) -> AsyncIterator[str]:
    stream_id = new_id()
    yield sse(chunk(stream_id, model, {"role": "assistant", "content": ""}))
    yield sse(chunk(stream_id, model, {"content": text}))
    yield sse(chunk(stream_id, model, {}, "stop"))
    yield sse("[DONE]")


# ---------------------------------------------------------------- models, retrieval, embeddings


@router.get("/models", summary="The corpus as a model (OpenAI models list)")
async def models(state: State) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/models/{model}", summary="One model", responses=errors(404))
async def model(model: str, state: State) -> dict[str, Any]:
    check_model(model)
    return _model_card(state)


def _model_card(state: ApiState) -> dict[str, Any]:
    settings = state.settings
    try:
        articles = state.collection.articles()
    except EXPECTED:
        articles = []
    return {"id": MODEL_ID, "object": "model", "created": int(state.started), "owned_by": "rag-news",
            "meta": {"description": "Answers only from the indexed news articles, with cited passages",
                     "generator": settings.generator, "engine": settings.engine, "embedder": settings.embedder,
                     "articles": len(articles), "chunks": sum(a.chunks for a in articles),
                     "top_k": settings.top_k, "max_tokens": settings.max_new_tokens,
                     "suggestion_prompts": suggested_prompts(articles)}}


@router.post("/retrieve", summary="The passages for a query (retrieval only), with their scores",
             max_body_size=JSON_BODY_LIMIT, responses=errors(400, 413, 429, 503))
async def retrieve_passages(body: RetrieveRequest, request: Request,
                            state: State) -> dict[str, Any]:
    """The passages retrieval finds, each with its article's `published` date, `outlet` and `also_in` (near-copies
    folded into it); `since` / `until` (YYYY-MM-DD, inclusive) keep only articles published in that range."""
    state.require_ready()
    query = asked_text(body.query, state.settings)
    k = body.top_k or state.settings.top_k
    passages = await _queued(request, state, lambda: _retrieve(query, k, body, state))
    return {"object": "list", "query": query, "data": [{**p.to_dict(), "relevance": p.relevance} for p in passages]}


def _retrieve(query: str, k: int, dates: DateRange, state: ApiState) -> list[Passage]:
    return state.collection.retrieve(query, k, dates.since, dates.until)


@router.post("/embeddings", summary="Embeddings by the project's embedder (OpenAI embeddings)",
             max_body_size=JSON_BODY_LIMIT, responses=errors(400, 404, 413, 429, 503))
async def embeddings(body: EmbeddingRequest, request: Request,
                     state: State) -> dict[str, Any]:
    from rag.models.embedders import get_embedder

    settings = state.settings
    check_model(body.model, (settings.embedder,))
    texts = [body.input] if isinstance(body.input, str) else list(body.input)  # 1 to 256, none blank (wire.py)
    state.require_ready()
    embedder = get_embedder(settings)

    def embed() -> Any:
        return embedder.embed(texts) if body.input_type == "document" else embedder.embed_queries(texts)

    vectors = await _queued(request, state, embed)
    tokens = sum(len(t.split()) for t in texts)
    return {"object": "list", "model": body.model, "data": embedding_data(vectors, body.encoding_format),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _queued(request: Request, state: ApiState, work: Callable[[], T]) -> T:
    ticket = state.gate.admit()
    try:
        return await unless_disconnected(request, in_turn(state, work))
    except ClientGone:
        state.gate.stopped += 1
        raise
    finally:
        ticket.release()


# ---------------------------------------------------------------- articles


def _article(info: ArticleInfo) -> dict[str, Any]:
    """An article as listed: `date` is its publication date, else the day its file was written; `published` is
    the publication date alone ("" when the article gives none); `copies` the articles that are near-copies."""
    return {"id": info.doc_id, "object": "article", "title": info.title, "date": info.date, "chunks": info.chunks,
            "published": info.published, "outlet": info.outlet, "copies": list(info.copies)}


def _report(report: IndexReport) -> dict[str, Any]:
    return {"documents": report.documents, "chunks": report.chunks, "added": report.added,
            "updated": report.updated, "removed": report.removed, "rejected": report.rejected,
            "duplicates": report.duplicates, "renamed": report.renamed}


@router.get("/articles", summary="The indexed articles with their publication dates (the Articles panel's list)")
async def articles(state: State) -> dict[str, Any]:
    listed = await anyio.to_thread.run_sync(state.collection.articles)
    return {"object": "list", "data": [_article(a) for a in listed]}


@router.get("/articles/{doc_id:path}", summary="One indexed article", responses=errors(404))
async def article(doc_id: str, state: State) -> dict[str, Any]:
    listed = await anyio.to_thread.run_sync(state.collection.articles)
    found = next((a for a in listed if a.doc_id == doc_id), None)
    if found is None:
        raise UnknownArticle(f"{doc_id}: no such article in the index")
    return _article(found)


@router.post("/articles", status_code=201, max_body_size=UPLOAD_BODY_LIMIT, responses=errors(400, 413, 429, 503),
             summary="Upload articles (.txt, .md, .html, .pdf): the same checks and limits as the chat page")
async def upload_articles(request: Request, files: Annotated[list[UploadFile], File()],
                          state: State) -> dict[str, Any]:
    """Each file is checked (size first: 413 over `max_upload_mb`), copied into the corpus under a safe name and
    indexed, all or nothing; duplicates and renamed files are reported. 400 when every file was refused."""
    settings = state.settings
    if len(files) > MAX_UPLOAD_FILES:
        raise BadInput(f"at most {MAX_UPLOAD_FILES} files per upload")
    for upload in files:
        check_upload_size(upload.filename or "upload", _size(upload), settings)
    state.require_ready()
    folder = Path(tempfile.mkdtemp(prefix="rag-upload-"))
    try:
        saved = [(await anyio.to_thread.run_sync(_save, upload, folder / str(n)), upload.filename or f"upload-{n}")
                 for n, upload in enumerate(files)]
        report = await _queued(request, state, lambda: state.collection.add(saved))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if report.rejected and not (report.added or report.updated or report.duplicates):
        raise BadInput("nothing was indexed: " + "; ".join(report.rejected))
    return {"object": "upload", **_report(report)}


def _size(upload: UploadFile) -> int:
    if upload.size is not None:
        return upload.size
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    return size


def _save(upload: UploadFile, path: Path) -> Path:
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return path


@router.delete("/articles/{doc_id:path}", summary="Delete an article from the corpus folder and the index",
                responses=errors(400, 404, 429, 503))
async def delete_article(doc_id: str, request: Request, state: State) -> dict[str, Any]:
    """The Articles panel's deletion: 404 for an id the index does not hold, 400 for the last article."""
    state.require_ready()
    report = await _queued(request, state, lambda: state.collection.remove([doc_id]))
    return {"id": doc_id, "object": "article.deleted", "deleted": True, **_report(report)}


# ---------------------------------------------------------------- health


@health_router.get("/health", summary="Models loaded, index present, queue depth (503 until ready)",
                   responses={200: {"model": Health, "description": "ready"},
                              503: {"model": Health, "description": "the models are loading or failed to load"}})
async def health(state: State) -> JSONResponse:
    ready = state.ready.is_set() and not state.failure
    body = {"status": "ok" if ready else "failed" if state.failure else "loading", "models_loaded": ready,
            "index_present": state.index_present(), "error": state.failure or None,
            "generator": state.settings.generator, "embedder": state.settings.embedder,
            "queue": {"running": state.gate.running, "waiting": state.gate.waiting,
                      "max_queue": state.gate.max_queue, "stopped_by_client": state.gate.stopped}}
    return JSONResponse(body, status_code=200 if ready else 503)


# ---------------------------------------------------------------- errors


LOADING_RETRY_S = 5


def _error_response(exc: BaseException, retry_after: int) -> JSONResponse:
    found = outcome(exc)
    headers = {}
    if isinstance(exc, Busy | Unavailable):
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(str(exc), found.error_type, kind_of(exc)), status_code=found.status,
                        headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed(request: Request) -> str:
    """Every method some route serves at the request's path (Starlette's own 405 names only the first route's)."""
    routes = request.app.router.routes
    return ", ".join(method for method in METHODS
                     if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes))


def install_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's {"error": {"message", "type", "code"}} with its real status (rag.errors.outcome)."""

    async def library_error(request: Request, exc: Exception) -> JSONResponse:
        busy = isinstance(exc, Busy)
        return _error_response(exc, get_state(request).gate.retry_after() if busy else LOADING_RETRY_S)

    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        said = str(first.get("msg", "invalid request")).removeprefix("Value error, ")  # our own validators' text
        message = f"{where}: {said}" if where else said
        return JSONResponse(error_body(message, "invalid_request_error", "bad_input", where or None), status_code=400)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: ("not_found_error", "not_found"), 413: ("invalid_request_error", "too_large"),
                 405: ("invalid_request_error", "method_not_allowed")}
        error_type, code = kinds.get(exc.status_code, ("invalid_request_error", f"http_{exc.status_code}"))
        message = ("the request body is larger than this endpoint accepts" if exc.status_code == 413
                   else str(exc.detail))
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return JSONResponse(error_body(message, error_type, code), status_code=exc.status_code, headers=headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(error_body("something went wrong on the server; the details are in its log",
                                       "server_error", "unexpected"), status_code=500)

    app.add_exception_handler(RagError, library_error)
    app.add_exception_handler(OSError, library_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


# ---------------------------------------------------------------- the app


def create_app(settings: Settings, corpus: Path | None = None) -> FastAPI:
    """The API over `corpus` (default: the settings' corpus folder); models load when the app starts."""
    state = ApiState(settings, Path(corpus) if corpus else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="rag-load", daemon=True).start()
        yield

    app = FastAPI(title="rag-news API", version="1", lifespan=lifespan, docs_url="/docs",
                  description="OpenAI-compatible answers from the news articles, with their cited passages. "
                              "Errors are OpenAI's {\"error\": {\"message\", \"type\", \"code\", \"param\"}}.")
    app.state.rag = state
    app.include_router(router)
    app.include_router(health_router)
    install_error_handlers(app)
    install_openapi(app, settings)
    return app


def serve_api(settings: Settings, corpus: Path | None = None) -> None:
    """`rag serve`: the API on `host`:`api_port` until interrupted (blocks). Listens at once; models load behind."""
    import uvicorn

    warning = settings.check_api_exposure()
    if warning:
        print(warning, flush=True)
    print(f"rag-news API on http://{settings.host}:{settings.api_port} (docs at /docs); loading "
          f"{settings.generator} and {settings.embedder} …", flush=True)
    uvicorn.run(create_app(settings, corpus), host=settings.host, port=settings.api_port, log_level="info",
                timeout_graceful_shutdown=5)


__all__ = ["ApiState", "Gate", "create_app", "router", "serve_api"]
