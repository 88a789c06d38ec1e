"""The data types the stages share: documents and chunks, passages, citations, answers, usage, reports, indexing
progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Document:
    doc_id: str  # path relative to the corpus root, with forward slashes
    title: str
    text: str  # the original text, as shown to people; chunk offsets point into it
    path: str
    sha256: str
    body_start: int = 0  # where the body begins (after a title line or front matter)
    meta: dict[str, str] = field(default_factory=dict)  # source, date, author, url, ... when the file gives them
    published: str = ""  # the article's publication date, ISO "YYYY-MM-DD"; "" when unknown
    outlet: str = ""  # who published it (a site name or a front matter `source`); "" when unknown


@dataclass
class Chunk:
    doc_id: str
    title: str
    chunk_index: int
    start: int  # character offsets into Document.text
    end: int
    paragraphs: tuple[int, int]  # first and last paragraph number (1-based, after the title)
    text: str  # normalised, what is embedded and searched
    raw: str  # Document.text[start:end], what is displayed
    id: int = -1  # assigned by the index: the chunk's row in its build
    key: int = -1  # assigned by the index: kept by the chunk across builds (the Milvus primary key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["paragraphs"] = list(self.paragraphs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        return cls(**{**data, "paragraphs": tuple(data["paragraphs"])})


@dataclass
class Passage:
    """A retrieved chunk with the score of every stage that saw it (None where a stage is off).

    >>> passage = rag.retrieve("chip exports", k=1)[0]
    >>> passage.doc_id, passage.rank, passage.relevance > 0
    ('south-korea-ai-investment.txt', 1, True)
    >>> sorted(passage.to_dict())[:4]
    ['also_in', 'chunk_id', 'doc_id', 'end']
    """

    chunk_id: int
    doc_id: str
    title: str
    text: str  # as in the article (display)
    start: int
    end: int
    paragraphs: tuple[int, int]
    rank: int = 0
    scores: dict[str, float | None] = field(default_factory=dict)
    published: str = ""  # the article's publication date (ISO) or "" when unknown
    outlet: str = ""
    # the other articles holding a near-copy of this passage (folded into it): {"doc_id", "title", "published"}
    also_in: list[dict[str, str]] = field(default_factory=list)

    @property
    def relevance(self) -> float:
        """Cosine similarity of question and passage: the score refusal decisions use."""
        return float(self.scores.get("dense_similarity") or 0.0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["paragraphs"] = list(self.paragraphs)
        return data


@dataclass
class Citation:
    """A marker [n] of an answer and the passage it points to, with the sentence there that supports it
    (`span_text`, at `span_start`:`span_end` of the document's text) and how much of the claim it holds (`support`).

    >>> reply = rag.answer("How much will South Korea invest in AI chips by 2027?")
    >>> citation = reply.citations[0]
    >>> citation.marker, citation.doc_id, citation.span_text in citation.passage
    (1, 'south-korea-ai-investment.txt', True)
    """

    marker: int
    chunk_id: int
    doc_id: str
    title: str
    passage: str
    span_start: int | None  # offsets of the supporting sentence in the document's text
    span_end: int | None
    span_text: str
    retrieval_score: float
    support: float
    published: str = ""  # the cited article's publication date (ISO) or ""
    outlet: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    text: str
    citations: list[Citation] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # what the checker changed, for logs and tests
    supported_sentences: int = 0
    declined: list[str] = field(default_factory=list)  # sentences saying the articles do not give a part
    trimmed: list[str] = field(default_factory=list)  # details cut from a sentence because no passage gives them


@dataclass
class Retrieval:
    """The first event of `stream_answer`: what was retrieved, so sources can be shown while the answer streams.

    >>> first = next(rag.stream_answer("What did Zuckerberg discuss in Seoul?"))
    >>> type(first).__name__, len(first.passages) > 0
    ('Retrieval', True)
    """

    question: str
    rewritten_question: str
    passages: list[Passage]


@dataclass
class Answer:
    """What `answer` returns: the checked text with [n] markers, its citations, whether it was refused (and why),
    the passages read, and what it cost. `to_dict()` is what `rag ask --json` prints and the API sends.

    >>> reply = rag.answer("How much will South Korea invest in AI chips by 2027?")
    >>> reply.refused, reply.refusal_reason, "[1]" in reply.text
    (False, '', True)
    >>> import json
    >>> json.loads(json.dumps(reply.to_dict()))["refused"]
    False
    """

    question: str
    text: str
    citations: list[Citation]
    refused: bool
    passages: list[Passage]
    unsupported: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    rewritten_question: str = ""
    # "instruction" | "low-relevance" | "generator" | "unsupported" | "no-answer" | "verifier" | ""
    refusal_reason: str = ""
    second_look: bool = False  # the generator refused, was asked once more, and that reply was checked
    raw_text: str = ""  # the generator's reply before the citation check
    # what the generator read ("document" or "passages") and, per call, the tokens it processed (from the engine)
    usage: dict[str, Any] = field(default_factory=dict)
    partial: bool = False  # the reply answers part of the question and says the articles do not give the rest
    verdict: dict[str, Any] = field(default_factory=dict)  # the verifier's scores, when it ran
    closest: Citation | None = None  # with a refusal: the sentence of the articles nearest the question
    # the passages that answer give different values: one group per value, {"value", "markers", "sources"}
    conflict: bool = False
    conflict_groups: list[dict[str, Any]] = field(default_factory=list)
    # the publication dates the answer was limited to: {"since", "until", "latest", "phrase", "source", "applied"}
    dates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "second_look": self.second_look,
            "unsupported": self.unsupported,
            "passages": [p.to_dict() for p in self.passages],
            "timings": self.timings,
            "models": self.models,
            "rewritten_question": self.rewritten_question,
            "raw_text": self.raw_text,
            "usage": self.usage,
            "partial": self.partial,
            "verdict": self.verdict,
            "closest": self.closest.to_dict() if self.closest else None,
            "conflict": self.conflict,
            "conflict_groups": self.conflict_groups,
            "dates": self.dates,
        }


@dataclass(frozen=True)
class Prefix:
    """Says which start of a prompt stays the same across calls, so the engine keeps its processed state.

    `varying` is the tail of the last message that changes from call to call (the question); everything before
    its last occurrence in the rendered prompt is the prefix (instructions and passages). `persist` also saves
    the state to disk (for whole documents, which are asked about again in later processes); `label` names
    the state (a document id).
    """

    varying: str
    persist: bool = False
    label: str = ""


@dataclass
class Usage:
    """What the last call cost the engine, read from the engine itself."""

    prompt_tokens: int = 0
    evaluated_tokens: int = 0  # prompt tokens the engine processed in this call; the rest came from a kept state
    state: str = "none"  # where the prefix came from: context | memory | disk | computed | none
    prefix_s: float = 0.0  # seconds spent restoring or computing the prefix
    completion_tokens: int = 0
    decode_s: float = 0.0  # from the first text piece to the end of the reply
    # How sure the engine was of the reply's own tokens (natural-log probabilities read from its logits; None where
    # the engine does not report them): the lowest, the mean, and the lowest over tokens holding a digit or a
    # capital letter (the figures and names an invented answer is made of).
    logprob_min: float | None = None
    logprob_mean: float | None = None
    logprob_key_min: float | None = None
    # The outputs of the layers asked for (`layers`), at the prompt's last position: read while the prompt is
    # processed, so they cost nothing more (rag.answering.decision's state probes). Not part of the usage record.
    layer_states: dict[int, list[float]] = field(default_factory=dict, repr=False)
    # The outputs of `reply_layers` over the reply: "last" where the reply's last evaluated token is, "mean" over its
    # tokens (read while it is generated; recorded for fitting). Not part of the usage record either.
    reply_states: dict[str, dict[int, list[float]]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("layer_states", "reply_states")}


@dataclass
class IndexReport:
    """What an indexing run did: the documents and chunks the index holds, what was added, changed, removed,
    skipped or rejected, and how long it took.

    >>> report = rag.Collection("corpus").index()
    >>> report.documents, report.chunks > 0
    (1, True)
    """

    documents: int = 0
    chunks: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one message per corpus file that could not be used
    rejected: list[str] = field(default_factory=list)  # uploads refused before they reached the corpus
    duplicates: list[str] = field(default_factory=list)  # uploads whose bytes are already in the corpus: not copied
    renamed: list[str] = field(default_factory=list)  # uploads saved under another name than their sender gave
    resumed: list[str] = field(default_factory=list)  # embedded by an interrupted run, taken from pending/
    embedded_chunks: int = 0  # embedded by this run
    rebuilt: bool = False
    seconds: float = 0.0  # the whole run, reading files and loading the embedder included
    embed_seconds: float = 0.0  # chunking and embedding the new chunks only

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.rebuilt)

    @property
    def chunks_per_s(self) -> float:
        return self.embedded_chunks / self.embed_seconds if self.embed_seconds else 0.0

    def summary(self) -> str:
        if not self.changed:
            return f"index up to date: {self.documents} documents, {self.chunks} chunks ({self.seconds:.2f} s)"
        what = "rebuilt" if self.rebuilt else (
            f"+{len(self.added)} new, {len(self.updated)} changed, -{len(self.removed)} removed")
        if self.resumed:
            what += f"; {len(self.resumed)} documents embedded by an interrupted run reused"
        return (f"indexed {self.documents} documents, {self.chunks} chunks ({what}) in {self.seconds:.2f} s; "
                f"embedded {self.embedded_chunks} chunks at {self.chunks_per_s:.1f} chunks/s")


@dataclass(frozen=True)
class IndexProgress:
    """Where an indexing run stands, as its progress callback is told (rag/indexing/progress.py). The counts are
    this run's work: the new or changed documents read (or found unreadable) of those to read, and their chunks
    embedded (or taken from an interrupted run) of the chunks expected. Until every document has been chunked the
    expected chunks are an estimate from the documents chunked so far (`chunks_exact` False). `eta_s`, the seconds
    of embedding left at the rate measured so far, is None until enough has been embedded to say.

    >>> step = rag.IndexProgress("embedding", chunks_done=40, chunks_total=160, chunks_exact=True, eta_s=75)
    >>> step.fraction
    0.25
    """

    stage: str  # "scanning" | "loading" | "copying" | "embedding" | "writing" | "done"
    documents_done: int = 0
    documents_total: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    chunks_exact: bool = False
    elapsed_s: float = 0.0  # since the run began
    eta_s: float | None = None

    @property
    def fraction(self) -> float | None:
        """The share of the chunks embedded (1.0 once writing); None while nothing says how many there will be."""
        if self.stage in ("writing", "done"):
            return 1.0
        if self.stage != "embedding" or not self.chunks_total:
            return None
        return min(1.0, self.chunks_done / self.chunks_total)

    def describe(self) -> str:
        """One line for a person: "Embedding 412/~1,005 chunks · 38/181 docs · 1m12s left" ("~": estimated)."""
        docs = f"{self.documents_done:,}/{self.documents_total:,} docs"
        if self.stage == "scanning":
            return "Scanning the articles…"
        if self.stage == "loading":
            return f"Loading the embedder · {self.documents_total:,} docs to index"
        if self.stage == "copying":
            return "Copying the unchanged articles from the last build…"
        if self.stage == "writing":
            return f"Writing the index · {self.chunks_done:,} chunks · {docs}"
        if self.stage == "done":
            return f"Indexed {self.chunks_done:,} chunks · {docs} in {_duration(self.elapsed_s)}"
        if not self.chunks_total and not self.chunks_exact:
            return f"Reading · {docs}"
        line = f"Embedding {self.chunks_done:,}/{'' if self.chunks_exact else '~'}{self.chunks_total:,} chunks · {docs}"
        return line + (f" · {_duration(self.eta_s)} left" if self.eta_s is not None else "")


ProgressCallback = Callable[[IndexProgress], None]


def _duration(seconds: float) -> str:
    """A time span as a person reads it: "8s", "1m12s", "2h05m"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02}m"


@dataclass
class ArticleInfo:
    """One article of a collection, as `Collection.articles()` lists it.

    >>> article = rag.Collection("corpus").articles()[0]
    >>> article.doc_id, article.chunks > 0
    ('south-korea-ai-investment.txt', True)
    """

    doc_id: str
    title: str
    date: str  # the article's own date (published), else the day its file was last written
    chunks: int
    published: str = ""  # the publication date read from the article (ISO), "" when it gives none
    outlet: str = ""
    copies: list[str] = field(default_factory=list)  # other articles that are near-copies of this one
