"""The OpenAI wire format of the API: request bodies, and answers as completions, stream frames and sources."""

from __future__ import annotations

import base64
import re
import time
import uuid
from datetime import date
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from rag.errors import BadInput
from rag.settings import MAX_REPLY_TOKENS, MAX_RETRIEVE_K, MAX_TOP_K
from rag.text import char_outside
from rag.types import Answer, Citation, Passage

MODEL_ID = "rag-news"  # the corpus, as the one model the API lists
ONE_MARKER = re.compile(r"\[(\d+)\]")


# ---------------------------------------------------------------- requests


TEXT_PARTS = ("text", "input_text")
TEXT_PART = {"type": "object", "properties": {"type": {"enum": list(TEXT_PARTS)}, "text": {"type": "string"}},
             "required": ["type", "text"]}
# A text holding something besides white space (str.strip() leaves it non-empty).
NOT_BLANK = char_outside("".join(c for c in map(chr, range(0x3001)) if c.isspace()))
MAX_EMBED_INPUTS = 256
EMBED_TEXT = {"type": "string", "pattern": NOT_BLANK}


class ChatMessage(BaseModel):
    """One message; its content is text, or a list of text parts (an image or audio part is refused)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str | list[dict[str, Any]] | None, WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}, {"type": "null"}]})] = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for part in content if isinstance(content, list) else []:
            if part.get("type") not in TEXT_PARTS:
                raise ValueError(f"only text can be asked about the articles, not a {part.get('type')!r} part")
            if not isinstance(part.get("text"), str):
                raise ValueError("a text part needs its `text`, a string")
        return content


def _whole(value: Any) -> Any:
    """JSON Schema's integer, which a strict int would refuse when written 3.0; "3" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(low: int, high: int) -> Any:
    """An integer field from `low` to `high` (the range in the schema as minimum and maximum)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole)]


TOKENS, CHAT_TOP_K, SEARCH_TOP_K = whole(1, MAX_REPLY_TOKENS), whole(1, MAX_TOP_K), whole(1, MAX_RETRIEVE_K)
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# A day, or empty (no bound); in the schema as well as in `checked_day`.
DAY_SCHEMA = {"anyOf": [{"type": "string", "format": "date"}, {"const": ""}, {"type": "null"}]}
SINCE = "this API's extra: only articles published on or after this day (YYYY-MM-DD, inclusive)"
UNTIL = "this API's extra: only articles published on or before this day (YYYY-MM-DD, inclusive)"
STREAM_UNCHECKED = ("this API's extra: with `stream`, send the reply as it is generated and the checked text as "
                    "`correction` in the last frame, for clients that apply it (default: the setting "
                    "stream_unchecked, off: only the checked text is streamed, once the checks have decided)")
PIECE_WORDS = 4  # words per content delta when the checked text is streamed


def checked_day(value: Any) -> date | None:
    """A request's `since` / `until`: None when absent or empty, else a real calendar day written YYYY-MM-DD
    (ValueError saying what is wrong; the error handler names the field)."""
    if value is None or value == "" or isinstance(value, date):
        return value or None
    if not isinstance(value, str):
        raise ValueError(f"expected a date as a string YYYY-MM-DD, not {type(value).__name__}")
    if not ISO_DAY.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not a date YYYY-MM-DD (e.g. 2024-05-03)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a day of the calendar") from None


class DateRange(BaseModel):
    """`since` / `until`: the publication dates an answer (or a search) is limited to; both inclusive, either
    open. An article of unknown date is left out when either is given. Every field's type is strict: "5" is not a
    number nor "true" a boolean, as the schema says."""

    model_config = ConfigDict(strict=True)

    since: Annotated[date | None, WithJsonSchema(DAY_SCHEMA)] = Field(None, description=SINCE,
                                                                      examples=["2024-05-03"])
    until: Annotated[date | None, WithJsonSchema(DAY_SCHEMA)] = Field(None, description=UNTIL,
                                                                      examples=["2024-05-31"])

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
    """An OpenAI chat completion request; `top_k`, `since`, `until` and `stream_unchecked` are this API's own extras.
    Other OpenAI fields are accepted and ignored (decoding is greedy: temperature, top_p, seed and n do not apply)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(MODEL_ID, json_schema_extra={"enum": [MODEL_ID]})
    messages: list[ChatMessage] = Field(min_length=1, description=(
        "the conversation: the last message is the question, a user message whose text holds something besides "
        "white space and is at most max_question_chars (2000) characters long; the earlier user and assistant "
        "turns are its history"))
    stream: bool = False
    max_tokens: TOKENS | None = None
    max_completion_tokens: TOKENS | None = None
    top_k: CHAT_TOP_K | None = Field(None, description="passages to retrieve (this API's extra)")
    stream_options: dict[str, Any] | None = None
    stream_unchecked: bool | None = Field(None, description=STREAM_UNCHECKED)


class RetrieveRequest(DateRange):
    query: str
    top_k: SEARCH_TOP_K | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    input: Annotated[str | list[str], WithJsonSchema({"anyOf": [EMBED_TEXT, {
        "type": "array", "items": EMBED_TEXT, "minItems": 1, "maxItems": MAX_EMBED_INPUTS}]})]
    model: str = MODEL_ID
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = Field(
        "query", description="this API's extra: a question (the embedder's query prompt) or a passage")

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > MAX_EMBED_INPUTS or not all(re.search(NOT_BLANK, t) for t in texts):
            raise ValueError(f"1 to {MAX_EMBED_INPUTS} texts, none of them empty or only white space")
        return value


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


CLOSEST = "Closest in the articles: "


def passage_event(citation: Citation, passage: Passage | None = None, closest: bool = False,
                  label: str = "") -> dict[str, Any]:
    """One cited passage, or a refusal's closest sentence (`closest`: a place to rephrase from, not an answer), as
    the `event` of a stream frame in the fields Open WebUI 0.12 reads (docs/http-api.md): `metadata.source` is one
    id per passage, so that two passages of an article stay two sources; `metadata.name` the label of the [n] chip,
    the source list and the source window (the article's title, date and outlet; `label` when given); the document,
    shown as Markdown, the supporting sentence above the passage."""
    published, outlet = _published_and_outlet(citation, passage)
    when = ", ".join(part for part in (published, outlet) if part)
    label = label or source_label(citation, passage, closest)
    key = f"{citation.doc_id}#{citation.chunk_id}" + ("#closest" if closest else "")
    said = ("Closest sentence (the articles do not answer the question)" if closest else "Supporting sentence")
    document = (f"**{citation.title}**" + (f" ({when})" if when else "") + f"\n\n**{said}:** "
                f"{citation.span_text.strip()}\n\n**Passage:** {citation.passage.strip()}")
    return {"type": "source", "data": {
        "source": {"id": key, "name": label},
        "document": [document],
        "metadata": [{"source": key, "name": label, "title": citation.title, "article": citation.doc_id,
                      "chunk": citation.chunk_id, "marker": None if closest else citation.marker,
                      "sentence": citation.span_text, "start": citation.span_start, "end": citation.span_end,
                      "closest": closest, **dated(published, outlet, passage.also_in if passage else None)}],
        "distances": [round(citation.retrieval_score, 4)],
    }}


def source_label(citation: Citation, passage: Passage | None = None, closest: bool = False) -> str:
    """What a front-end names a source: the article's title, with its date and outlet where known."""
    when = ", ".join(part for part in _published_and_outlet(citation, passage) if part)
    return (CLOSEST if closest else "") + citation.title + (f" ({when})" if when else "")


def _published_and_outlet(citation: Citation, passage: Passage | None) -> tuple[str, str]:
    """When and by whom a cited passage was published: the citation's own, else its passage's."""
    return (citation.published or (passage.published if passage else ""),
            citation.outlet or (passage.outlet if passage else ""))


def cited_events(final: Answer) -> list[dict[str, Any]]:
    """The `source` events of a decided answer: one per cited passage in the order of its markers (the k-th event is
    [k]), or a refusal's closest sentence as its one source. Two passages of one article get distinct labels (an
    older Open WebUI keys the chips by label)."""
    by_chunk = {p.chunk_id: p for p in final.passages}
    if final.refused:
        closest = final.closest
        return [passage_event(closest, by_chunk.get(closest.chunk_id), closest=True)] if closest else []
    events, labels = [], set()
    for citation in final.citations:
        passage = by_chunk.get(citation.chunk_id)
        label = source_label(citation, passage)
        if label in labels:  # another passage of an article cited before
            label = f"{label}, passage {citation.marker}"
        labels.add(label)
        events.append(passage_event(citation, passage, label=label))
    return events


def text_pieces(text: str, words: int = PIECE_WORDS) -> list[str]:
    """The checked text as content deltas of a few words each, markers kept whole; joined, they are the text."""
    found = re.findall(r"\s*\S+", text)
    pieces = ["".join(found[i:i + words]) for i in range(0, len(found), words)]
    rest = text[sum(len(p) for p in pieces):]  # trailing white space
    return pieces + [rest] if rest else pieces


def source_of(citation: Citation, closest: bool = False, passage: Passage | None = None) -> dict[str, Any]:
    """A cited passage: its marker, article, chunk, text, the character offsets of the supporting sentence in
    the article's text, when and by whom it was published, and the articles holding a near-copy of it."""
    published, outlet = _published_and_outlet(citation, passage)
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
    streamed (`stream_unchecked` only: markers moved or removed, a refusal in place of the reply): a client that
    streams unchecked text shows `correction.content`."""
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
