"""HTML for the chat page's panels: sources with highlighted spans, the corpus info line, upload reports.

Pure functions of the library's result objects; every piece of article or user text is escaped here.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from rag.types import Answer, ArticleInfo, Citation, IndexReport, Passage, Retrieval

READ = {"document": "read the whole article (kept state)", "passages": "read the retrieved passages"}
REFUSAL_REASONS = {
    "instruction": "the question asks to set aside the articles or the rules, or to show the instructions",
    "low-relevance": "no passage is close enough to the question",
    "generator": "the model found no answer in the passages",
    "unsupported": "no sentence of the model's reply was backed by a passage",
    "no-answer": "the model's reply only restated the question",
    "verifier": "asked to check, the model judged that the passages do not state the answer",
}


def as_chat_text(text: str) -> str:
    """Text for a chat bubble, which renders Markdown: angle brackets are escaped, so HTML in a question or an
    answer (copied from an article, say) shows as text instead of becoming elements, harmless-looking or not."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def from_chat_text(text: str) -> str:
    """The text a chat bubble was made from (inverse of `as_chat_text`)."""
    return text.replace("&lt;", "<").replace("&gt;", ">")


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
    if answer.unsupported:
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
    return (f'<div class="rag-card rag-cited" data-marker="{citation.marker}">'
            f'<div class="rag-card-head"><span class="rag-marker">[{citation.marker}]</span> '
            f'<span class="rag-title">{escape(citation.title)}</span> '
            f'<span class="rag-doc">{escape(citation.doc_id)}</span></div>{scores}'
            f'<div class="rag-text">{highlight(text, start, citation)}</div></div>')


def _passage_card(passage: Passage, show_scores: bool, label: str) -> str:
    scores = _scores_line(_passage_scores(passage)) if show_scores else ""
    return (f'<div class="rag-card" data-chunk="{passage.chunk_id}">'
            f'<div class="rag-card-head"><span class="rag-marker">{escape(label)}</span> '
            f'<span class="rag-title">{escape(passage.title)}</span> '
            f'<span class="rag-doc">{escape(passage.doc_id)}</span></div>{scores}'
            f'<div class="rag-text">{escape(passage.text)}</div></div>')


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


def article_table(articles: Iterable[ArticleInfo]) -> str:
    """The indexed articles: title, date, chunk count and file, one row each (`data-doc` holds the file)."""
    articles = list(articles)
    if not articles:
        return '<div class="rag-articles"><p>No article is indexed.</p></div>'
    rows = "".join(f'<tr data-doc="{escape(a.doc_id)}"><td class="rag-title">{escape(a.title)}</td>'
                   f'<td>{escape(a.date)}</td><td class="rag-chunks">{a.chunks}</td>'
                   f'<td class="rag-doc">{escape(a.doc_id)}</td></tr>' for a in articles)
    total = sum(a.chunks for a in articles)
    return ('<div class="rag-articles"><table><thead><tr><th>Title</th><th>Date</th><th>Chunks</th><th>File</th>'
            f'</tr></thead><tbody>{rows}</tbody></table><p class="rag-summary">{len(articles)} '
            f"article{'s' if len(articles) != 1 else ''}, {total} chunks</p></div>")


def confirm_delete(article: ArticleInfo) -> str:
    return (f'<div class="rag-confirm" role="alert">Delete <b>{escape(article.title)}</b> '
            f'<span class="rag-doc">{escape(article.doc_id)}</span>? It is removed from the corpus folder and the '
            "index; this cannot be undone.</div>")


def delete_report(report: IndexReport, titles: dict[str, str]) -> str:
    """What a deletion did: the articles removed (by title), then the index summary."""
    removed = ", ".join(f"{escape(titles.get(d, d))} ({escape(d)})" for d in report.removed)
    return (f'<div class="rag-upload"><p class="rag-ok">✓ Deleted {removed or "nothing"}.</p>'
            f'<p class="rag-summary">{escape(report.summary())}</p></div>')
