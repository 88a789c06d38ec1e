"""The OpenAI wire format of the API: request bodies, and answers as completions, stream frames and sources."""

from __future__ import annotations

import base64
import re
import time
import uuid
from datetime import date
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rag.errors import BadInput
from rag.types import Answer, Citation, Passage

MODEL_ID = "rag-news"  # the corpus, as the one model the API lists
ONE_MARKER = re.compile(r"\[(\d+)\]")


# ---------------------------------------------------------------- requests


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
SINCE = "this API's extra: only articles published on or after this day (YYYY-MM-DD, inclusive)"
UNTIL = "this API's extra: only articles published on or before this day (YYYY-MM-DD, inclusive)"


def checked_day(value: Any) -> date | None:
    """A request's `since` / `until`: None when absent or empty, else a real calendar day written YYYY-MM-DD
    (ValueError saying what is wrong; the error handler names the field)."""
    if value is None or value == "" or isinstance(value, date):
        return value or None
    if not isinstance(value, str):
        raise ValueError(f"expected a date as a string YYYY-MM-DD, not {type(value).__name__}")
    if not ISO_DAY.fullmatch(value.strip()):
        raise ValueError(f"{value[:40]!r} is not a date YYYY-MM-DD (e.g. 2024-05-03)")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a day of the calendar") from None


class DateRange(BaseModel):
    """`since` / `until`: the publication dates an answer (or a search) is limited to; both inclusive, either
    open. An article of unknown date is left out when either is given."""

    since: date | None = Field(None, description=SINCE, examples=["2024-05-03"])
    until: date | None = Field(None, description=UNTIL, examples=["2024-05-31"])

    @field_validator("since", "until", mode="before")
    @classmethod
    def _a_day(cls, value: Any) -> date | None:
        return checked_day(value)

    @model_validator(mode="after")
    def _in_order(self) -> DateRange:
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until}): no article can be in that range")
        return self


class ChatRequest(DateRange):
    """An OpenAI chat completion request; `top_k`, `since` and `until` are this API's own extras. Other OpenAI
    fields are accepted and ignored (decoding is greedy: temperature, top_p, seed and n do not apply)."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=1024)
    max_completion_tokens: int | None = Field(None, ge=1, le=1024)
    top_k: int | None = Field(None, ge=1, le=20, description="passages to retrieve (this API's extra)")
    stream_options: dict[str, Any] | None = None


class RetrieveRequest(DateRange):
    query: str
    top_k: int | None = Field(None, ge=1, le=50)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str]
    model: str = MODEL_ID
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = Field(
        "query", description="this API's extra: a question (the embedder's query prompt) or a passage")


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string, or the text parts of a list of parts (an image or audio part is refused)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") not in ("text", "input_text"):
            raise BadInput(f"only text can be asked about the articles, not a {part.get('type')!r} part")
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """The question (the last message, which must be the user's) and the earlier user and assistant turns."""
    if messages[-1].role != "user":
        raise BadInput(f"the last message must be the user's question, not a {messages[-1].role!r} message")
    history = [{"role": m.role, "content": text_of(m.content)} for m in messages[:-1]
               if m.role in ("user", "assistant")]
    return text_of(messages[-1].content), history


# ---------------------------------------------------------------- answers


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def dated(published: str, outlet: str, also_in: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Who published an article and when ("" when unknown), and the other articles holding a near-copy of the
    passage (only when there are some)."""
    fields: dict[str, Any] = {"published": published, "outlet": outlet}
    if also_in:
        fields["also_in"] = [{k: str(a.get(k) or "") for k in ("doc_id", "title", "published", "outlet")}
                             for a in also_in]
    return fields


def source_event(passages: list[Passage]) -> dict[str, Any]:
    """One article's passages as the `event` of a stream frame, in the shape Open WebUI keeps as a message's source
    (documents, and per document its metadata and a relevance in [-1, 1] it shows as a percentage)."""
    first = passages[0]
    return {"type": "source", "data": {
        "source": {"id": first.doc_id, "name": first.title},
        "document": [p.text for p in passages],
        "metadata": [{"source": first.doc_id, "name": first.title, "article": p.doc_id, "chunk": p.chunk_id,
                      "start": p.start, "end": p.end, "rank": p.rank, "scores": p.scores,
                      **dated(p.published, p.outlet, p.also_in)} for p in passages],
        "distances": [round(p.relevance, 4) for p in passages],
    }}


def by_article(passages: list[Passage]) -> list[list[Passage]]:
    """Passages grouped by article, articles in the order of their first passage (the [n] order of the prompt)."""
    groups: dict[str, list[Passage]] = {}
    for passage in passages:
        groups.setdefault(passage.doc_id, []).append(passage)
    return list(groups.values())


def closest_event(closest: Citation) -> dict[str, Any]:
    """A refusal's closest sentence as a source event (a place to rephrase from, not an answer)."""
    return {"type": "source", "data": {
        "source": {"id": closest.doc_id, "name": f"Closest in the articles: {closest.title}"},
        "document": [closest.span_text],
        "metadata": [{"source": closest.doc_id, "name": f"Closest in the articles: {closest.title}",
                      "article": closest.doc_id, "chunk": closest.chunk_id, "closest": True,
                      **dated(closest.published, closest.outlet)}],
    }}


def source_of(citation: Citation, closest: bool = False, passage: Passage | None = None) -> dict[str, Any]:
    """A cited passage: its marker, article, chunk, text, the character offsets of the supporting sentence in
    the article's text, when and by whom it was published, and the articles holding a near-copy of it."""
    published = citation.published or (passage.published if passage else "")
    outlet = citation.outlet or (passage.outlet if passage else "")
    return {"marker": None if closest else citation.marker, "article": citation.doc_id, "title": citation.title,
            "chunk": citation.chunk_id, "text": citation.passage,
            "span": {"start": citation.span_start, "end": citation.span_end, "text": citation.span_text},
            "scores": {"retrieval": citation.retrieval_score, "support": citation.support}, "closest": closest,
            **dated(published, outlet, passage.also_in if passage else None)}


def sources_of(final: Answer) -> list[dict[str, Any]]:
    by_chunk = {p.chunk_id: p for p in final.passages}
    if final.refused:
        closest = final.closest
        return [source_of(closest, True, by_chunk.get(closest.chunk_id))] if closest else []
    return [source_of(c, passage=by_chunk.get(c.chunk_id)) for c in final.citations]


def annotations(final: Answer, base_url: str) -> list[dict[str, Any]]:
    """OpenAI `url_citation` annotations: where each [n] marker stands in the text, and the article it cites (its
    URL on this API: GET /v1/articles/{id})."""
    cited = {c.marker: c for c in final.citations}
    found = []
    for match in ONE_MARKER.finditer(final.text):
        citation = cited.get(int(match.group(1)))
        if citation is None:
            continue
        found.append({"type": "url_citation", "url_citation": {
            "start_index": match.start(), "end_index": match.end(), "title": citation.title,
            "url": f"{base_url}v1/articles/{citation.doc_id}"},
            "marker": citation.marker, "article": citation.doc_id, "chunk": citation.chunk_id})
    return found


def usage_of(final: Answer) -> dict[str, int]:
    """Tokens the generator processed for the answer, summed over its calls (rewrite, answer, verifier)."""
    calls = final.usage.get("calls", []) if final.usage else []
    prompt = sum(int(c.get("prompt_tokens", 0)) for c in calls)
    completion = sum(int(c.get("completion_tokens", 0)) for c in calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(final: Answer, max_tokens: int) -> str:
    calls = [c for c in (final.usage or {}).get("calls", []) if c.get("purpose") == "answer"]
    return "length" if any(int(c.get("completion_tokens", 0)) >= max_tokens for c in calls) else "stop"


def extensions(final: Answer) -> dict[str, Any]:
    """This API's fields beside OpenAI's: sources, whether and why the articles do not say, a partial answer,
    whether the articles disagree (one group per value given), and the publication dates the answer kept to."""
    return {"sources": sources_of(final), "refused": final.refused, "refusal_reason": final.refusal_reason,
            "partial": final.partial, "rewritten_question": final.rewritten_question, "conflict": final.conflict,
            "conflict_groups": final.conflict_groups, "dates": final.dates}


def completion(final: Answer, base_url: str, max_tokens: int, model: str = MODEL_ID) -> dict[str, Any]:
    message = {"role": "assistant", "content": final.text, "refusal": None,
               "annotations": annotations(final, base_url)}
    return {"id": new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(final, max_tokens)}],
            "usage": usage_of(final), **extensions(final)}


def reply(text: str, model: str = MODEL_ID) -> dict[str, Any]:
    """A completion that is not an answer from the articles (a housekeeping task's JSON)."""
    return {"id": new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                 "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def chunk(stream_id: str, model: str, delta: dict[str, Any] | None = None, finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """One `chat.completion.chunk` frame; `delta=None` gives a frame without choices (a source, the usage)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": stream_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices, **extra}


def final_chunk(stream_id: str, model: str, final: Answer, streamed: str, max_tokens: int) -> dict[str, Any]:
    """The last frame with choices: the finish reason, the sources, and the checked text when it differs from what
    streamed (markers moved or removed, a refusal in place of the reply): a client shows `correction.content`."""
    extra = extensions(final)
    if final.text != streamed:
        extra["correction"] = {"content": final.text}
    return chunk(stream_id, model, {}, finish_reason(final, max_tokens), **extra)


def embedding_data(vectors: np.ndarray, encoding: str) -> list[dict[str, Any]]:
    def encoded(vector: np.ndarray) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        return [float(v) for v in vector]

    return [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)]


def error_body(message: str, error_type: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}
