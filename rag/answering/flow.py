"""Grounded answers: question checks, follow-up rewriting, the reading context, generation, refusal, citations."""

from __future__ import annotations

import collections.abc
import functools
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.answering.citations import check_citations, closest_sentence, is_bare_label, renumber, supporting_span
from rag.answering.conflicts import Conflict, detect
from rag.answering.decision import adds_information
from rag.answering.focus import missing_focus, trim_details
from rag.answering.prompts import (
    ANSWER_RULE,
    OR_REFUSE_RULE,
    PART_RULE,
    REWRITE_PROMPT,
    STATE_PROBE,
    Context,
    answer_rule,
    build_prompt,
)
from rag.answering.verification import Verdict, layout_of, reply_layers, studied_reply_layers, threshold_for, verify
from rag.answering.windows import sentence_window
from rag.arguments import PathArg, optional_path
from rag.dates import TimeScope, as_of_date, request_scope, time_scope
from rag.errors import BadInput
from rag.generators.base import Generator, complete
from rag.generators.factory import get_generator
from rag.models.embedders import get_embedder
from rag.retrieval import Retriever, get_retriever
from rag.settings import Settings, settings_or_default
from rag.text import char_outside, is_instruction, key_terms, normalize_text, split_sentences, strip_markers
from rag.types import Answer, CheckResult, Passage, Prefix, Retrieval, Usage

NOT_IN_ARTICLES = "The articles do not say: {part}"
# Closes an answer a detail was trimmed from, so that it reads as partial in every client (Open WebUI keeps
# only the text). It does not repeat the detail: a reader should not take it from the note.
TRIMMED_NOTE = "The articles do not state one detail of the reply, so it was left out."
LATEST_REPORTS = 2  # passages read for a question that asks for the latest: the newest report and the one before
_PART_BREAK = re.compile(r",?\s+and\s+(?=(?:how|what|when|where|who|whom|which|why|whose|did|does|do|is|are|was|were|"
                         r"will|can|has|have)\b)", re.IGNORECASE)
REFUSAL_PATTERNS = re.compile(
    r"\b(do(?:es)? not (?:say|mention|contain|provide|specify|state|include)|not (?:mentioned|provided|"
    r"specified|stated|given|found|available)|no (?:information|mention|data|details)|cannot (?:answer|find|"
    r"determine)|can't (?:answer|find|determine)|don't know|do not know|unable to (?:answer|find|determine)|"
    r"isn't (?:mentioned|stated)|is not (?:mentioned|stated|given|known))\b",
    re.IGNORECASE,
)
_FOLLOW_UP = re.compile(r"\b(he|she|him|his|her|hers|they|them|their|it|its|this|that|these|those|there|"
                        r"then|the same|the two|both|the latter|the former)\b", re.IGNORECASE)
# Control characters, and invisible ones that can hide or reorder text (zero-width spaces, bidi overrides).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069]")


class QuestionError(BadInput, ValueError):
    """The question (or its history) cannot be asked: not text, empty, too long, a history of another shape;
    nothing was sent to a model.

    >>> try:
    ...     rag.answer("How much?", history=[42])
    ... except rag.QuestionError as error:
    ...     print(error)
    history item 0: expected a message dict ({'role': 'user', 'content': ...}) or a (question, answer) pair, got int 42
    """


def is_refusal(text: str, refusal_text: str = "") -> bool:
    """Whether a reply declines to answer (the fixed sentence or a usual way of saying so)."""
    plain = normalize_text(text).lower()
    return bool(plain) and ((refusal_text and refusal_text.lower().rstrip(".") in plain)
                            or bool(REFUSAL_PATTERNS.search(plain)))


def clean_question(question: str, settings: Settings) -> str:
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, not {type(question).__name__}")
    # Lone surrogates (from broken JSON or binary input) cannot be encoded; pairs become their character.
    question = question.encode("utf-16", "surrogatepass").decode("utf-16", "replace").replace("\ufffd", "")
    question = _CONTROL.sub("", unicodedata.normalize("NFC", question))
    question = re.sub(r"\s+", " ", question).strip()
    if not question:
        raise QuestionError("the question is empty")
    if len(question) > settings.max_question_chars:
        raise QuestionError(f"the question is {len(question)} characters long; the limit is "
                            f"{settings.max_question_chars} (setting max_question_chars)")
    return question


@functools.cache
def question_pattern() -> str:
    """A regular expression (Python's and JSON Schema's alike) for one character that `clean_question` keeps and
    does not count as space: a question must hold one to be asked (the API's schema states it)."""
    dropped = "".join(c for c in map(chr, range(0x10000))
                      if not 0xD800 <= ord(c) <= 0xDFFF and (c.isspace() or _CONTROL.match(c) or c == "\ufffd"))
    return char_outside(dropped)


def history_turns(history: Any) -> list[tuple[str, str]]:
    """(user, assistant) pairs from Gradio- or OpenAI-style message dicts (roles other than user and assistant are
    skipped) or from (question, answer) pairs. A history that is not a list, or an item that is neither a message
    dict nor a pair, is a QuestionError naming it."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise QuestionError(f"the history must be a list of messages or of (question, answer) pairs, "
                            f"not {type(history).__name__}")
    turns: list[tuple[str, str]] = []
    pending_user = None
    for position, item in enumerate(history):
        if isinstance(item, dict):
            content = _text_of(item.get("content"))
            if item.get("role") == "user":
                pending_user = content
            elif item.get("role") == "assistant" and pending_user is not None:
                turns.append((pending_user, content))
                pending_user = None
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append((_text_of(item[0]), _text_of(item[1])))
        else:
            raise QuestionError(f"history item {position}: expected a message dict ({{'role': 'user', 'content': "
                                f"...}}) or a (question, answer) pair, got {type(item).__name__} {item!r:.60}")
    return turns


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Gradio 6: a list of parts such as {"type": "text", "text": ...}
        return " ".join(_text_of(part.get("text", "") if isinstance(part, dict) else part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return "" if content is None else str(content)


def needs_context(question: str) -> bool:
    return bool(_FOLLOW_UP.search(question)) or len(key_terms(question)[1]) < 2


def standalone_question(question: str, history: Any, generator: Generator, settings: Settings,
                        calls: list[dict[str, Any]] | None = None) -> str:
    """Rewrite a follow-up ("When did he last visit?") into a question that stands alone, for retrieval."""
    turns = history_turns(history)[-settings.history_turns:]
    if not turns or not needs_context(question):
        return question
    conversation = "\n".join(f"User: {u}\nAssistant: {strip_markers(a)}" for u, a in turns)
    messages = [{"role": "system", "content": REWRITE_PROMPT},
                {"role": "user", "content": f"Conversation:\n{conversation}\n\nLast question: {question}\n"
                                            "Rewritten question:"}]
    rewritten, usage = complete(generator, messages, max_tokens=60, stop=["\n"])
    if calls is not None:
        calls.append({"purpose": "rewrite", **usage.to_dict()})
    rewritten = rewritten.strip().strip('"')
    rewritten = re.sub(r"^(rewritten question|question)\s*:\s*", "", rewritten, flags=re.IGNORECASE).strip()
    if not rewritten or len(rewritten) > 300 or is_refusal(rewritten):
        return f"{turns[-1][0]} {question}"  # fall back on the previous question's words
    return rewritten


def fits(question: str, context: Context, generator: Generator, settings: Settings) -> bool:
    """Whether the prompt, a second look's rule and the reply fit the generator's context window."""
    messages, _ = build_prompt(question, context, settings, max((ANSWER_RULE, OR_REFUSE_RULE), key=len))
    budget = settings.context_tokens - settings.max_new_tokens - 32  # 32: the chat template's own tokens
    return generator.count_tokens("".join(m["content"] for m in messages)) <= budget


def reading_context(question: str, passages: list[Passage], retriever: Retriever, generator: Generator,
                    settings: Settings, scope: TimeScope | None = None) -> Context:
    """The whole document when every retrieved passage comes from it and it fits (`whole_document`), else the
    retrieved passages (with `read_window_tokens`, each cut to its best-matching sentences: rag/answering/windows.py),
    dropping the lowest-ranked until they fit. When the latest is asked for and the passages
    are dated, only the newest report and the one before it are read (retrieval put them first): given four
    reports of one figure, the 1.5B generator often answers with an older one."""
    if scope and scope.latest and sum(bool(p.published) for p in passages) > 1:
        passages = passages[:LATEST_REPORTS]
    documents = {p.doc_id for p in passages}
    if settings.whole_document and len(documents) == 1:
        document = Context(retriever.document_passages(documents.pop(), passages), whole_document=True)
        if fits(question, document, generator, settings):
            return document
    kept = list(passages)
    if settings.read_window_tokens:
        kept = [sentence_window(question, p, settings.read_window_tokens, generator.count_tokens) for p in kept]
    while len(kept) > 1 and not fits(question, Context(kept), generator, settings):
        kept.pop()
    return Context(kept)


def stream_answer(question: str, history: Any = None, settings: Settings | None = None,
                  corpus: PathArg | None = None, since: Any = None, until: Any = None,
                  **overrides: Any) -> Iterator[Retrieval | str | Answer]:
    """Yield a Retrieval event, then the reply's text pieces as they are generated, then the final Answer.

    The final Answer's text is the checked one (markers fixed and numbered [1], [2], … in order of first appearance,
    refusals normalised), so it can differ from the concatenated pieces; show `Answer.text` once it arrives. A reply
    that is the refusal sentence is held back until it is final, since a second look may replace it. One generation
    runs at a time per model.

    `since` / `until` (a date or "YYYY-MM-DD", inclusive) keep only articles published in that range; without
    them, a range the question names ("in March 2023", "last week") is applied when it leaves a relevant
    passage, and "latest" / "most recent" puts the newest reports first (rag/dates.py).

    Every argument is checked when this is called, before a model is loaded: a bad one raises a BadInput (a
    QuestionError, BadArgument or SettingsError) naming it; `overrides` are settings (`top_k=3`), checked as such.

    >>> events = list(rag.stream_answer("What did Zuckerberg discuss in Seoul?", top_k=3))
    >>> type(events[0]).__name__, type(events[-1]).__name__, len(events[0].passages) <= 3
    ('Retrieval', 'Answer', True)
    """
    settings = settings_or_default(settings)
    settings = settings.replace(**overrides) if overrides else settings
    question = clean_question(question, settings)
    history_turns(history)
    folder = optional_path(corpus, "corpus")
    request_scope(since, until, TimeScope())  # bad dates are refused before any model work
    return _stream_answer(question, history, settings, folder, since, until)


def _stream_answer(question: str, history: Any, settings: Settings, corpus: Path | None, since: Any, until: Any
                   ) -> Iterator[Retrieval | str | Answer]:
    started = time.perf_counter()
    generator = get_generator(settings)
    models = {"generator": generator.name, "engine": generator.engine, "embedder": settings.embedder}
    timings: dict[str, float] = {}
    calls: list[dict[str, Any]] = []

    attack = is_instruction(question)  # asks the model to drop its sources or rules, or to show its prompt
    rewrite = history and not attack
    search_query = standalone_question(question, history, generator, settings, calls) if rewrite else question
    timings["rewrite_s"] = time.perf_counter() - started
    t0 = time.perf_counter()
    retriever = get_retriever(settings, corpus)
    scope = request_scope(since, until, time_scope(search_query, as_of_date(settings.as_of)))
    passages, applied = retriever.search(search_query, settings.top_k, scope)
    timings["retrieval_s"] = time.perf_counter() - t0
    yield Retrieval(question, search_query, passages)
    usage: dict[str, Any] = {"context": "none", "calls": calls}
    dates = scope.to_dict(applied) if scope.ranged or scope.latest else {}

    def finish(text: str, refused: bool, reason: str, raw: str = "", checked: CheckResult | None = None,
               conflict: Conflict | None = None) -> Answer:
        nearest = refused and reason != "instruction"
        timings["total_s"] = time.perf_counter() - started
        done = Answer(question, settings.refusal_text if refused else text, [] if refused or not checked else
                      checked.citations, refused, passages, checked.unsupported if checked else [],
                      {k: round(v, 4) for k, v in timings.items()}, models, rewritten_question=search_query,
                      refusal_reason=reason, raw_text=raw, usage=usage,
                      partial=bool(checked and (checked.declined or checked.trimmed) and not refused),
                      closest=closest_sentence(search_query, passages, raw) if nearest else None, dates=dates)
        if conflict:
            done.conflict, done.conflict_groups = True, conflict.groups
        done.text, done.citations, done.conflict_groups = renumber(done.text, done.citations, done.conflict_groups)
        return done

    if attack:
        timings["ttft_s"] = timings["generation_s"] = 0.0
        yield settings.refusal_text
        yield finish(settings.refusal_text, True, "instruction")
        return
    if not passages and scope.source == "request":
        timings["ttft_s"] = timings["generation_s"] = 0.0
        outside = no_article_dated(scope)
        yield outside
        final = finish(outside, True, "date-range")
        final.text = outside
        yield final
        return
    best = max((p.relevance for p in passages), default=0.0)
    if best < retriever.calibration.min_relevance:
        timings["ttft_s"] = timings["generation_s"] = 0.0
        yield settings.refusal_text
        yield finish(settings.refusal_text, True, "low-relevance")
        return

    context = reading_context(search_query, passages, retriever, generator, settings, scope)
    usage["context"] = layout_of(context)
    t0 = time.perf_counter()
    parts = question_parts(search_query) if settings.partial_answers else [search_query]
    outcomes = []
    for number, part in enumerate(parts):
        if number:
            yield " "
        whole = search_query if len(parts) > 1 else ""
        outcomes.append((yield from _answer_part(part, whole, context, generator, settings, timings, started, calls)))
    timings["generation_s"] = time.perf_counter() - t0
    text, reason, checked = combine_parts(parts, outcomes, settings)
    conflict = None
    if not reason and checked:
        t0 = time.perf_counter()
        conflict = detect(search_query, checked, context, generator, settings, scope,
                          retriever.calibration.min_relevance, calls)
        timings["conflict_s"] = time.perf_counter() - t0
    if conflict:
        yield ("" if ended(text) == text else ".") + " " + conflict.sentence
        text = conflict.sentence if conflict.replace_answer else f"{ended(text)} {conflict.sentence}"
        cited = {c.marker: c for c in checked.citations + conflict.citations if f"[{c.marker}]" in text}
        checked.citations = sorted(cited.values(), key=lambda c: c.marker)  # a replaced answer's marker is gone
    if not reason and checked and checked.trimmed and not (conflict and conflict.replace_answer):
        yield ("" if ended(text) == text else ".") + " " + TRIMMED_NOTE
        text = f"{ended(text)} {TRIMMED_NOTE}"
    final = finish(text, bool(reason), reason, " ".join(o.raw for o in outcomes), checked, conflict)
    final.second_look = any(o.second_look for o in outcomes)
    final.verdict = next((o.verdict.to_dict() for o in outcomes if o.verdict), {})
    if checked and checked.trimmed:
        final.verdict["trimmed"] = list(checked.trimmed)
    if any(o.unfocused for o in outcomes):  # what the focus check refused, for `rag eval` to weigh the check
        final.verdict["unfocused"] = {"missing": [t for o in outcomes for t in o.unfocused],
                                      "text": " ".join(o.checked.text for o in outcomes if o.checked)}
    yield final


def ended(text: str) -> str:
    """The text with a full stop after its last sentence when it has none ("$8.2 million [1]" -> "... [1].")."""
    return text if re.search(r"[.!?][\"')\]]*(?:\s*\[\d+\])*$", text.rstrip()) else text.rstrip() + "."


def no_article_dated(scope: TimeScope) -> str:
    """The reply when the requested dates leave no article."""
    since, until = scope.since, scope.until
    span = (f"between {since} and {until}" if since and until else f"on or after {since}" if since
            else f"on or before {until}")
    return f"No article in the collection is dated {span}."


@dataclass
class PartOutcome:
    """One answered question (or part of one): the reply, the reason it is refused ("" if not), the checks."""

    raw: str
    reason: str
    checked: CheckResult | None
    verdict: Verdict | None = None
    second_look: bool = False
    unfocused: list[str] = field(default_factory=list)  # the question's focus terms no cited sentence carries


def _answer_part(part: str, whole: str, context: Context, generator: Generator, settings: Settings,
                 timings: dict[str, float], started: float, calls: list[dict[str, Any]],
                 ) -> collections.abc.Generator[str, None, PartOutcome]:
    """Stream the reply to a question, or to one part of a two-part question `whole`, then check and verify it."""

    def rule(text: str) -> str:  # a later part may lean on the earlier one ("and how long did he stay?")
        return PART_RULE.format(whole=whole) + text if whole and not whole.startswith(part[:-1]) else text

    first = answer_rule(settings)
    layers = reply_layers(generator, settings)
    raw, usage = yield from _reply(generator, *build_prompt(part, context, settings, rule(first)), settings, timings,
                                   started, calls, layers=layers)
    looked_twice = settings.offer_refusal and settings.second_look and is_refusal(raw, settings.refusal_text)
    if looked_twice:
        # Small generators often refuse although a passage holds the answer; asked again without the refusal
        # option they answer, and the citation and answer checks below decide whether that answer stands.
        # The second look differs only in the question part, so the passages are not processed again.
        prompt = build_prompt(part, context, settings, rule(ANSWER_RULE))
        raw, usage = yield from _reply(generator, *prompt, settings, timings, started, calls, "second-look", layers)
    if raw and _held_back(raw, settings):
        yield raw  # a refusal held back by _reply: show it now that no second look will replace it
    # A sentence refused for one detail the passages lack ("... in 2021") is answered without it, and checked,
    # verified and decided as the shorter reply.
    reply, trimmed = trim_details(raw, part, context.passages) if settings.trim_details else (raw, [])
    reason, checked = check_reply(reply, part, context.passages, settings)
    verdict = None
    threshold = threshold_for(generator.name, settings.verify_threshold)
    if reason != "generator" and settings.verify and threshold is not None and not (checked and checked.declined):
        t0 = time.perf_counter()
        verdict = verify(reply, part, context, generator, settings, rule(""), threshold, checked, not reason, usage)
        calls.append({"purpose": "verify", **verdict.usage.to_dict()})
        timings["verify_s"] = timings.get("verify_s", 0.0) + time.perf_counter() - t0
        reason, checked = _decided(reason, verdict, reply, context.passages, checked, settings)
    if checked:
        checked.trimmed = trimmed
    checks_focus = not reason and checked and settings.focus_check
    unfocused = missing_focus(part, checked, context.passages) if checks_focus else set()
    if unfocused:  # true sentences, but about another figure, year or name than the one asked for
        reason = "focus"
    return PartOutcome(raw, reason, checked, verdict, looked_twice, sorted(unfocused))


def _decided(reason: str, verdict: Verdict, raw: str, passages: list[Passage], checked: CheckResult | None,
             settings: Settings) -> tuple[str, CheckResult | None]:
    """The refusal reason once the verdict is in. A reply the fitted decision accepts although a name in it is
    missing from the passages ("Beijing, China" against a passage without "China") is checked again without the
    name rule; its figures must still be in the passage it cites."""
    if not verdict.passed:
        return reason or "verifier", checked
    if reason == "unsupported":
        checked = check_citations(raw, passages, settings.min_support, declines(settings), name_rule=False)
        return ("" if checked.supported_sentences else "unsupported"), checked
    return "", checked


def question_parts(question: str) -> list[str]:
    """A question that asks two things ("When did he last visit, and how long did he stay?") as its two parts,
    each answered on its own so that one the articles answer is not lost with one they do not; else [question]."""
    match = _PART_BREAK.search(question)
    if not match:
        return [question]
    first, second = question[: match.start()].strip(" ,?") + "?", question[match.end():].strip()
    if not key_terms(first)[1] or not key_terms(second)[1]:
        return [question]
    return [first, second[0].upper() + second[1:]]


def combine_parts(parts: list[str], outcomes: list[PartOutcome], settings: Settings
                  ) -> tuple[str, str, CheckResult | None]:
    """The text, refusal reason and checks of the whole answer. With two parts, an answered part stands and a
    part the checks refused is named as not in the articles (a partial answer); all refused is a refusal."""
    if len(outcomes) == 1:
        outcome = outcomes[0]
        return (outcome.checked.text if outcome.checked else ""), outcome.reason, outcome.checked
    answered = [o for o in outcomes if not o.reason]
    if not answered:
        return "", outcomes[0].reason, outcomes[0].checked
    merged = CheckResult(text="")
    sentences = []
    for part, outcome in zip(parts, outcomes, strict=True):
        if outcome.reason:
            sentences.append(NOT_IN_ARTICLES.format(part=part[0].lower() + part[1:]))
            merged.declined.append(sentences[-1])
            continue
        sentences.append(outcome.checked.text)
        merged.declined += outcome.checked.declined
        merged.trimmed += outcome.checked.trimmed
        merged.unsupported += outcome.checked.unsupported
        merged.supported_sentences += outcome.checked.supported_sentences
        for citation in outcome.checked.citations:
            if citation.marker not in {c.marker for c in merged.citations}:
                merged.citations.append(citation)
    merged.text = " ".join(sentences)
    merged.citations.sort(key=lambda c: c.marker)
    return merged.text, "", merged


def _reply(generator: Generator, messages: list[dict[str, str]], prefix: Prefix, settings: Settings,
           timings: dict[str, float], started: float, calls: list[dict[str, Any]], purpose: str = "answer",
           layers: tuple[int, ...] = ()) -> collections.abc.Generator[str, None, tuple[str, Usage]]:
    """Stream one reply and return its text and the engine's Usage (with the outputs of `layers` where the prompt
    ends). Pieces that may still become the refusal sentence are held back, so a refusal that a second look replaces
    is never shown. The engine's usage is appended to `calls`."""
    pieces: list[str] = []
    showing = False
    stream = generator.stream(messages, settings.max_new_tokens, prefix=prefix, layers=layers,
                              reply_layers=studied_reply_layers())
    while True:
        try:
            piece = next(stream)
        except StopIteration as done:
            usage = done.value or Usage()
            calls.append({"purpose": purpose, **usage.to_dict()})
            break
        timings.setdefault("ttft_s", time.perf_counter() - started)
        pieces.append(piece)
        if showing:
            yield piece
        elif not _held_back("".join(pieces), settings):
            showing = True
            yield "".join(pieces)
    timings.setdefault("ttft_s", time.perf_counter() - started)
    return "".join(pieces).strip(), usage


def _held_back(text: str, settings: Settings) -> bool:
    """Whether streamed text may still become the refusal sentence (so it is not shown yet)."""
    return settings.refusal_text.startswith(text.strip())


def declines(settings: Settings) -> collections.abc.Callable[[str], bool]:
    """Whether a sentence says the articles do not give something (the refusal sentence or a usual wording)."""
    return lambda sentence: is_refusal(sentence, settings.refusal_text)


def check_reply(raw: str, question: str, passages: list[Passage], settings: Settings,
                ) -> tuple[str, CheckResult | None]:
    """The lexical checks of a reply: a refusal reason ("generator", "unsupported", "no-answer") or "" with the
    checked text. Sentences saying the articles do not give a part are kept (a partial answer)."""
    says_not_given = declines(settings)
    if not raw or all(says_not_given(strip_markers(s)) for s in split_sentences(raw)):
        return "generator", None
    if is_bare_label(raw):
        raw = extractive_answer(raw, question, passages)
    checked = check_citations(raw, passages, settings.min_support, says_not_given)
    if checked.supported_sentences == 0:
        return "unsupported", checked
    answered = " ".join(s for s in split_sentences(checked.text) if strip_markers(s) not in checked.declined)
    if not adds_information(question, answered):
        return "no-answer", checked
    return "", checked


def extractive_answer(label: str, question: str, passages: list[Passage]) -> str:
    """When the model names a passage instead of answering, answer with that passage's best sentence."""
    cited = [int(n) for n in re.findall(r"\d+", label) if 0 < int(n) <= len(passages)] or [1]
    passage = passages[cited[0] - 1]
    # "when / how much / how many" questions want the sentence with the figure, not just the same words
    wants_figure = bool(re.match(r"\s*(when|how (much|many|long|big|fast)|what (year|date|percentage))\b",
                                 question, re.IGNORECASE))
    _, _, sentence, _ = supporting_span(question, passage, prefer_figures=wants_figure)
    return f"{normalize_text(sentence)} [{cited[0]}]"


def answer(question: str, history: Any = None, settings: Settings | None = None, corpus: PathArg | None = None,
           since: Any = None, until: Any = None, **overrides: Any) -> Answer:
    """Answer a question from the articles (default: the `corpus_dir` setting, or `corpus`, a str or PathLike):
    the checked text with [n] markers and its citations, or a refusal ("The articles do not say."). See
    `stream_answer` for the streaming form, `history`, `since` / `until` and `overrides`; `Collection` for a
    folder asked many times.

    >>> reply = rag.answer("How much will South Korea invest in AI chips by 2027?")
    >>> reply.refused, sorted({citation.doc_id for citation in reply.citations})
    (False, ['south-korea-ai-investment.txt'])
    >>> rag.answer("Who won the 1998 World Cup?").text
    'The articles do not say.'
    """
    return final_answer(stream_answer(question, history, settings, corpus, since, until, **overrides))


def final_answer(events: Iterator[Retrieval | str | Answer]) -> Answer:
    """The Answer a `stream_answer` iterator ends with, the iterator run to its end."""
    final = None
    for event in events:
        if isinstance(event, Answer):
            final = event
    assert final is not None, "stream_answer always ends with an Answer"
    return final


def warm_up(settings: Settings | None = None, corpus: PathArg | None = None) -> None:
    """Load the models and the index now rather than on the first question.

    >>> rag.warm_up()
    """
    settings = settings_or_default(settings)
    corpus = optional_path(corpus, "corpus")
    get_embedder(settings).warm_up()
    get_retriever(settings, corpus)
    get_generator(settings).warm_up()


def describe(settings: Settings | None = None, corpus: PathArg | None = None) -> dict[str, Any]:
    """What answers come from: documents and chunks indexed, generator, its engine, embedder."""
    settings = settings_or_default(settings)
    corpus = optional_path(corpus, "corpus")
    index = get_retriever(settings, corpus).index
    return {"documents": len(index.documents), "chunks": len(index.chunks), "generator": settings.generator,
            "engine": get_generator(settings).engine, "embedder": settings.embedder}


def prepare_document_states(settings: Settings | None = None, corpus: PathArg | None = None) -> dict[str, str]:
    """Have the generator read each indexed document once and save its state, so that the first question about
    it in any later process pays only a restore (`rag index` does this when `index_states` is on).

    Returns doc id -> "computed", "disk", "memory" or "context" (where the state came from), or why it was skipped.
    A corpus of more than `states_on_disk` documents is skipped: its states are made on first use instead."""
    settings = settings_or_default(settings)
    corpus = optional_path(corpus, "corpus")
    retriever = get_retriever(settings, corpus)
    documents = list(retriever.index.documents)
    if not settings.whole_document or len(documents) > settings.states_on_disk:
        return {}
    generator = get_generator(settings)
    done: dict[str, str] = {}
    for doc_id in documents:
        context = Context(retriever.document_passages(doc_id), whole_document=True)
        if fits(STATE_PROBE, context, generator, settings):
            done[doc_id] = generator.prefill(*build_prompt(STATE_PROBE, context, settings)).state
        else:
            done[doc_id] = "too long for the context window (its questions read retrieved passages)"
    return done


__all__ = ["Answer", "QuestionError", "Retrieval", "answer", "describe", "is_refusal", "prepare_document_states",
           "stream_answer", "warm_up"]
