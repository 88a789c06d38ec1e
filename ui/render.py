"""HTML for the chat page's panels: sources with highlighted spans, dates and outlets, disagreements, the corpus
info line, the articles, upload reports.

Pure functions of the library's result objects; every piece of article or user text is escaped here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from html import escape
from typing import Any

from rag.dates import UNKNOWN_DATE, describe_scope, outlet_and_date
from rag.types import Answer, ArticleInfo, Citation, IndexReport, Passage, Retrieval

READ = {"document": "read the whole article (kept state)", "passages": "read the retrieved passages"}
REFUSAL_REASONS = {
    "instruction": "the question asks to set aside the articles or the rules, or to show the instructions",
    "low-relevance": "no passage is close enough to the question",
    "generator": "the model found no answer in the passages",
    "unsupported": "no sentence of the model's reply was backed by a passage",
    "no-answer": "the model's reply only restated the question",
    "verifier": "asked to check, the model judged that the passages do not state the answer",
    "date-range": "no article is dated within the requested dates",
}
DRAFT_LABEL = "Draft — checking against the articles…"
DRAFT_START = '<div class="rag-draft"'


def as_chat_text(text: str) -> str:
    """Text for a chat bubble, which renders Markdown: angle brackets are escaped, so HTML in a question or an
    answer (copied from an article, say) shows as text instead of becoming elements, harmless-looking or not."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def from_chat_text(text: str) -> str:
    """The text a chat bubble was made from (inverse of `as_chat_text`)."""
    return text.replace("&lt;", "<").replace("&gt;", ">")


def draft_bubble(text: str) -> str:
    """The reply as it streams, before the checks: a box labelled as an unchecked draft (greyed and italic, and
    said in words, not by colour alone), which the checked answer or the refusal replaces. The text is escaped and
    its line breaks become <br>, so no blank line can end the box early in the bubble's Markdown."""
    body = "<br>".join(escape(line) for line in text.split("\n"))
    return (f'{DRAFT_START} aria-busy="true"><div class="rag-draft-label" role="status">{DRAFT_LABEL}</div>'
            f'<div class="rag-draft-text">{body}</div></div>')


def is_draft(content: str) -> bool:
    """Whether a chat bubble holds a draft (a checked answer cannot: its "<" is escaped by `as_chat_text`)."""
    return content.startswith(DRAFT_START)


def placeholder_sources() -> str:
    return ('<div class="rag-sources rag-empty"><p>Ask a question: the passages the answer is drawn from, '
            "with the supporting sentence highlighted, appear here.</p></div>")


def render_retrieval(event: Retrieval, show_scores: bool) -> str:
    """While the answer streams: the passages that were retrieved and are being read."""
    parts = [f'<div class="rag-sources rag-pending" data-question="{escape(event.question)}">',
             f"<h3>Retrieved passages <small>({len(event.passages)}; answer in progress…)</small></h3>"]
    parts.append(_searched_for(event.question, event.rewritten_question))
    if not event.passages:
        parts.append("<p>No passage found.</p>")
    parts += [_passage_card(p, show_scores, label=f"#{p.rank}") for p in event.passages]
    parts.append("</div>")
    return "".join(parts)


def render_answer(answer: Answer, show_scores: bool) -> str:
    """After the answer: the cited passages with their supporting spans, unsupported sentences, the rest."""
    parts = [f'<div class="rag-sources rag-final" data-question="{escape(answer.question)}">']
    if answer.refused:
        reason = REFUSAL_REASONS.get(answer.refusal_reason, "")
        parts.append('<div class="rag-refusal"><strong>No answer from the articles.</strong>'
                     + (f" ({escape(reason)})" if reason else "") + _closest(answer) + "</div>")
    else:
        parts.append(f"<h3>Cited passages <small>({len(answer.citations)})</small></h3>")
    parts.append(_searched_for(answer.question, answer.rewritten_question))
    parts.append(_dates_note(answer.dates))
    if answer.conflict:
        parts.append(conflict_box(answer.conflict_groups))
    if answer.unsupported and not answer.refused:  # a refusal's are the rejected reply: never shown
        items = "".join(f"<li>{escape(s)}</li>" for s in answer.unsupported)
        parts.append('<div class="rag-unsupported" role="alert"><strong>⚠ Not supported by the passages'
                     f"</strong> (check these yourself):<ul>{items}</ul></div>")
    by_chunk = {p.chunk_id: p for p in answer.passages}
    for citation in sorted(answer.citations, key=lambda c: c.marker):
        parts.append(_citation_card(citation, by_chunk.get(citation.chunk_id), show_scores))
    cited = {c.chunk_id for c in answer.citations}
    others = [p for p in answer.passages if p.chunk_id not in cited]
    if others:
        title = "Retrieved passages" if answer.refused or not answer.citations else "Other retrieved passages"
        opened = " open" if answer.refused else ""
        parts.append(f'<details class="rag-others"{opened}><summary>{title} ({len(others)}, not cited)</summary>')
        parts += [_passage_card(p, show_scores, label=f"#{p.rank}") for p in others]
        parts.append("</details>")
    parts.append(_footer(answer, show_scores))
    parts.append("</div>")
    return "".join(parts)


def _closest(answer: Answer) -> str:
    """What the articles say nearest the question, so the user can rephrase: a source, not an answer."""
    closest = answer.closest
    if closest is None or not closest.span_text.strip():
        return ""
    return (f'<div class="rag-closest">Closest in the articles, from <b>{escape(closest.title)}</b>: '
            f"<q>{escape(closest.span_text.strip())}</q></div>")


def conflict_box(groups: list[dict[str, Any]]) -> str:
    """The articles give different values: each value with its markers, and who reported it when."""
    items = []
    for group in groups:
        markers = " ".join(f'<span class="rag-marker">[{int(m)}]</span>' for m in group.get("markers") or [])
        sources = "; ".join(_article_named(s) for s in group.get("sources") or [])
        items.append(f'<li><b class="rag-value">{escape(str(group.get("value", "")))}</b> {markers}'
                     + (f" — {sources}" if sources else "") + "</li>")
    return (f'<div class="rag-conflict" role="alert"><strong>The articles disagree</strong> '
            f"<small>({len(groups)} reports)</small><ul>{''.join(items)}</ul></div>")


def _article_named(article: dict[str, Any]) -> str:
    """"Title (Outlet, 2024-05-02)" for an article given as {"doc_id", "title", "published", "outlet"}."""
    when = escape(outlet_and_date(str(article.get("outlet") or ""), str(article.get("published") or "")))
    return f'{escape(str(article.get("title") or article.get("doc_id") or ""))} <span class="rag-when">({when})</span>'


def _dates_note(dates: dict[str, Any]) -> str:
    """The publication dates the answer kept to, when a range or "latest" was used."""
    said = describe_scope(dates)
    return f'<p class="rag-dates">Dates: {escape(said)}</p>' if said else ""


def render_event(event: Answer | Retrieval | None, show_scores: bool) -> str:
    if isinstance(event, Answer):
        return render_answer(event, show_scores)
    if isinstance(event, Retrieval):
        return render_retrieval(event, show_scores)
    return placeholder_sources()


def highlight(passage_text: str, passage_start: int, citation: Citation) -> str:
    """The passage, escaped, with the citation's supporting span (document offsets) inside <mark>."""
    start = end = None
    if citation.span_start is not None and citation.span_end is not None:
        start, end = citation.span_start - passage_start, citation.span_end - passage_start
        if not (0 <= start < end <= len(passage_text)) or (
                citation.span_text and passage_text[start:end].strip() != citation.span_text.strip()):
            start = end = None
    if start is None and citation.span_text.strip() and citation.span_text.strip() != passage_text.strip():
        found = passage_text.find(citation.span_text.strip())
        if found >= 0:
            start, end = found, found + len(citation.span_text.strip())
    if start is None or end is None:
        return escape(passage_text)
    return (escape(passage_text[:start]) + '<mark class="rag-span">' + escape(passage_text[start:end])
            + "</mark>" + escape(passage_text[end:]))


def _citation_card(citation: Citation, passage: Passage | None, show_scores: bool) -> str:
    text = passage.text if passage else citation.passage
    start = passage.start if passage else (citation.span_start or 0)
    scores = ""
    if show_scores:
        values: dict[str, float | int | None] = {"support": citation.support}
        values.update(_passage_scores(passage) if passage else {"similarity": citation.retrieval_score})
        scores = _scores_line(values)
    published = citation.published or (passage.published if passage else "")
    outlet = citation.outlet or (passage.outlet if passage else "")
    return (f'<div class="rag-card rag-cited" data-marker="{citation.marker}">'
            f'<div class="rag-card-head"><span class="rag-marker">[{citation.marker}]</span> '
            f'<span class="rag-title">{escape(citation.title)}</span> '
            f'<span class="rag-doc">{escape(citation.doc_id)}</span></div>'
            f'{_published_line(published, outlet, passage.also_in if passage else [])}{scores}'
            f'<div class="rag-text">{highlight(text, start, citation)}</div></div>')


def _passage_card(passage: Passage, show_scores: bool, label: str) -> str:
    scores = _scores_line(_passage_scores(passage)) if show_scores else ""
    return (f'<div class="rag-card" data-chunk="{passage.chunk_id}">'
            f'<div class="rag-card-head"><span class="rag-marker">{escape(label)}</span> '
            f'<span class="rag-title">{escape(passage.title)}</span> '
            f'<span class="rag-doc">{escape(passage.doc_id)}</span></div>'
            f'{_published_line(passage.published, passage.outlet, passage.also_in)}{scores}'
            f'<div class="rag-text">{escape(passage.text)}</div></div>')


def _published_line(published: str, outlet: str, also_in: list[dict[str, str]]) -> str:
    """Who published the passage's article and when ("date unknown"), and the other articles holding a copy."""
    when = (f'<span class="rag-published">{escape(published)}</span>' if published
            else f'<span class="rag-published rag-undated">{UNKNOWN_DATE}</span>')
    who = f'<span class="rag-outlet">{escape(outlet)}</span> · ' if outlet else ""
    line = f'<div class="rag-meta">{who}{when}</div>'
    if also_in:
        titles = "; ".join(_article_named(a) for a in also_in)
        count = len(also_in)
        line += (f'<div class="rag-also">also in: {count} other article{"s" if count != 1 else ""} '
                 f"({titles})</div>")
    return line


def _passage_scores(passage: Passage) -> dict[str, float | int | None]:
    names = {"dense_similarity": "similarity", "bm25": "bm25", "fused": "fused", "rerank": "rerank"}
    values: dict[str, float | int | None] = {"rank": passage.rank}
    values.update({label: passage.scores.get(key) for key, label in names.items()})
    return values


def _scores_line(values: dict[str, float | int | None]) -> str:
    shown = [f"{escape(k)} <b>{_number(v)}</b>" for k, v in values.items() if v is not None]
    return f'<div class="rag-scores">{" · ".join(shown)}</div>' if shown else ""


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.4f}"


def _searched_for(question: str, rewritten: str) -> str:
    if rewritten and rewritten.strip() != question.strip():
        return f'<p class="rag-rewritten">Searched for: <q>{escape(rewritten)}</q></p>'
    return ""


def _footer(answer: Answer, show_scores: bool) -> str:
    bits = []
    if answer.timings.get("total_s") is not None:
        bits.append(f"{answer.timings['total_s']:.1f} s")
    if answer.models.get("generator"):
        bits.append(escape(answer.models["generator"]))
    if show_scores and answer.timings.get("ttft_s"):
        bits.append(f"first token after {answer.timings['ttft_s']:.1f} s")
    read = READ.get(answer.usage.get("context", ""))
    if show_scores and read:
        bits.append(read)
    return f'<p class="rag-footer">{" · ".join(bits)}</p>' if bits else ""


def info_line(documents: int, chunks: int, generator: str, engine: str, embedder: str) -> str:
    docs = f"{documents} document{'s' if documents != 1 else ''}"
    return (f'<div class="rag-info">Corpus: <b>{docs}</b>, <b>{chunks} chunks</b> · generator '
            f"<b>{escape(generator)}</b> ({escape(engine)}) · embedder <b>{escape(embedder)}</b></div>")


def upload_report(report: IndexReport, names: Iterable[str]) -> str:
    """What happened to the uploaded files: the index summary, the names they were saved under, the duplicates
    that were not copied again, then every rejected file with its reason."""
    names = list(names)
    rejected = len(report.rejected)
    parts = ['<div class="rag-upload">']
    if report.added or report.updated:
        added = ", ".join(escape(n) for n in report.added + report.updated)
        parts.append(f'<p class="rag-ok">✓ Added {added}: you can ask about it now.</p>')
    elif rejected + len(report.duplicates) < len(names):
        parts.append('<p class="rag-ok">Already in the corpus: nothing new to index.</p>')
    if report.renamed:
        items = "".join(f"<li>{escape(note)}</li>" for note in report.renamed)
        parts.append(f'<div class="rag-renamed">Saved under a safe name:<ul>{items}</ul></div>')
    if report.duplicates:
        items = "".join(f"<li>{escape(note)}</li>" for note in report.duplicates)
        parts.append(f'<div class="rag-duplicates"><strong>Already in the corpus ({len(report.duplicates)}):'
                     f"</strong><ul>{items}</ul></div>")
    if report.rejected:
        items = "".join(f"<li>{escape(reason)}</li>" for reason in report.rejected)
        parts.append(f'<div class="rag-rejected" role="alert"><strong>Rejected ({rejected}):</strong>'
                     f"<ul>{items}</ul></div>")
    parts.append(f'<p class="rag-summary">{escape(report.summary())}</p></div>')
    return "".join(parts)


def error_box(message: str) -> str:
    return f'<div class="rag-upload"><div class="rag-rejected" role="alert">{escape(message)}</div></div>'


def article_table(articles: Iterable[ArticleInfo], shown_of: int | None = None) -> str:
    """The indexed articles, newest first (undated last): title, publication date, outlet, chunk count, file and
    the near-copies, one row each (`data-doc` holds the file). `shown_of`: the whole list's length, when these
    are the ones a filter kept."""
    articles = newest_first(articles)
    if not articles:
        kept = " matches the filter" if shown_of else " is indexed"
        return f'<div class="rag-articles"><p>No article{kept}.</p></div>'
    rows = "".join(_article_row(a) for a in articles)
    total = sum(a.chunks for a in articles)
    of = f" (of {shown_of})" if shown_of is not None and shown_of != len(articles) else ""
    return ('<div class="rag-articles"><table><thead><tr><th>Title</th><th>Published</th><th>Outlet</th>'
            f'<th>Chunks</th><th>File</th></tr></thead><tbody>{rows}</tbody></table><p class="rag-summary">'
            f"{len(articles)} article{'s' if len(articles) != 1 else ''}{of}, {total} chunks</p></div>")


def _article_row(article: ArticleInfo) -> str:
    published = (f'<td class="rag-published">{escape(article.published)}</td>' if article.published else
                 f'<td class="rag-published rag-undated" title="file written {escape(article.date)}">'
                 f"{UNKNOWN_DATE}</td>")
    copies = (f'<div class="rag-also">near-copies: {escape(", ".join(article.copies))}</div>'
              if article.copies else "")
    return (f'<tr data-doc="{escape(article.doc_id)}"><td class="rag-title">{escape(article.title)}{copies}</td>'
            f'{published}<td class="rag-outlet">{escape(article.outlet)}</td>'
            f'<td class="rag-chunks">{article.chunks}</td><td class="rag-doc">{escape(article.doc_id)}</td></tr>')


def newest_first(articles: Iterable[ArticleInfo]) -> list[ArticleInfo]:
    """Articles by publication date, newest first; those of unknown date last, by title."""
    by_title = sorted(articles, key=lambda a: (a.title.casefold(), a.doc_id))
    dated = sorted((a for a in by_title if a.published), key=lambda a: a.published, reverse=True)
    return dated + [a for a in by_title if not a.published]


def filter_articles(articles: Iterable[ArticleInfo], text: str = "", since: date | None = None,
                    until: date | None = None) -> list[ArticleInfo]:
    """The articles whose title, outlet or file holds `text` (any case) and whose publication date is within
    `since`..`until` (inclusive); with a date bound, an article of unknown date is left out."""
    needle = text.strip().casefold()
    kept = []
    for article in articles:
        if needle and needle not in f"{article.title}\n{article.outlet}\n{article.doc_id}".casefold():
            continue
        if (since or until) and not _within(article.published, since, until):
            continue
        kept.append(article)
    return kept


def _within(published: str, since: date | None, until: date | None) -> bool:
    # ISO days compare as strings
    return bool(published) and (since is None or published >= since.isoformat()) and (
        until is None or published <= until.isoformat())


def confirm_delete(article: ArticleInfo) -> str:
    return (f'<div class="rag-confirm" role="alert">Delete <b>{escape(article.title)}</b> '
            f'<span class="rag-doc">{escape(article.doc_id)}</span>? It is removed from the corpus folder and the '
            "index; this cannot be undone.</div>")


def delete_report(report: IndexReport, titles: dict[str, str]) -> str:
    """What a deletion did: the articles removed (by title), then the index summary."""
    removed = ", ".join(f"{escape(titles.get(d, d))} ({escape(d)})" for d in report.removed)
    return (f'<div class="rag-upload"><p class="rag-ok">✓ Deleted {removed or "nothing"}.</p>'
            f'<p class="rag-summary">{escape(report.summary())}</p></div>')
