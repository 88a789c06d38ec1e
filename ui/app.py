"""The chat page: a thin Gradio shell over `rag` (layout, rendering of sources and event wiring only).

`build_app` makes the page, `serve` runs it (`rag chat`) with the OpenAI-compatible API (rag/server/app.py) beside it in
the same process, sharing the loaded models. The page makes no request outside the server: the theme uses system
fonts, there is no share link and analytics are off (set by `import rag`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from rag.answering.flow import QuestionError
from rag.collection import Collection
from rag.dates import DateError, user_date
from rag.errors import EXPECTED
from rag.models.registry import GENERATORS
from rag.settings import Settings, SettingsError
from rag.types import Answer, ArticleInfo, IndexProgress, Retrieval
from ui import render

log = logging.getLogger(__name__)

EXAMPLES = [
    "How much will South Korea invest in AI semiconductor R&D by 2027?",
    "Who did Zuckerberg meet in Seoul?",
    "How much did chip exports grow in February?",
    "What is the total planned investment in South Korea's semiconductor super cluster?",
]
UPLOAD_TYPES = ".txt, .md, .html, .pdf"
WARNING = "⚠️"
SEARCHING = "_Searching the articles…_"
READING = "_Reading {n} passage(s)…_"
SERVER_FAULT = "Something went wrong on the server (the details are in its log)."
DATE_PLACEHOLDER = "YYYY-MM-DD"
# Errors a question or an upload can meet that are the user's or the setup's to fix (the library's error family
# and the system's, rag.errors): shown, never a traceback.
EXPECTED_ERRORS = EXPECTED

SANS = ["ui-sans-serif", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "Noto Sans", "Liberation Sans",
        "DejaVu Sans", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "DejaVu Sans Mono", "monospace"]

CSS = """
#sources { max-height: 640px; overflow-y: auto; }
.rag-sources h3 { margin: 0 0 .5em; font-size: 1.05em; }
.rag-sources small, .rag-doc, .rag-scores, .rag-footer, .rag-rewritten, .rag-summary {
  color: var(--body-text-color-subdued); font-size: .85em; }
.rag-empty p { color: var(--body-text-color-subdued); }
.rag-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .6em .8em; margin: .5em 0;
  background: var(--background-fill-secondary); }
.rag-card-head { margin-bottom: .3em; }
.rag-marker { font-weight: 700; color: var(--color-accent); margin-right: .2em; }
.rag-title { font-weight: 600; }
.rag-doc { margin-left: .4em; font-family: var(--font-mono); }
.rag-scores { margin-bottom: .3em; }
.rag-text { font-size: .92em; line-height: 1.5; white-space: pre-wrap; }
mark.rag-span { background: #fde68a; color: #1f2937; padding: 0 .1em; border-radius: 3px; }
.rag-unsupported, .rag-rejected { border-left: 4px solid #d97706; background: rgba(217, 119, 6, .10);
  padding: .5em .8em; margin: .5em 0; border-radius: 4px; }
.rag-unsupported ul, .rag-rejected ul { margin: .3em 0 0 1.2em; }
.rag-closest { margin-top: .4em; font-size: .92em; }
.rag-refusal { border-left: 4px solid #6b7280; background: rgba(107, 114, 128, .12); padding: .5em .8em;
  margin: .3em 0 .6em; border-radius: 4px; }
.rag-others summary { cursor: pointer; margin: .6em 0 .2em; color: var(--body-text-color-subdued); }
.rag-info { color: var(--body-text-color-subdued); font-size: .9em; }
.rag-ok { margin: .3em 0; }
.rag-renamed ul, .rag-duplicates ul { margin: .3em 0 0 1.2em; }
.rag-articles { max-height: 360px; overflow-y: auto; }
.rag-articles table { width: 100%; border-collapse: collapse; font-size: .92em; }
.rag-articles th, .rag-articles td { text-align: left; padding: .25em .5em;
  border-bottom: 1px solid var(--border-color-primary); }
.rag-articles td.rag-chunks { text-align: right; }
.rag-confirm { border-left: 4px solid #dc2626; background: rgba(220, 38, 38, .08); padding: .5em .8em;
  border-radius: 4px; }
.rag-meta, .rag-also, .rag-dates { color: var(--body-text-color-subdued); font-size: .85em; margin-bottom: .2em; }
.rag-outlet { font-weight: 600; }
.rag-undated { font-style: italic; }
.rag-conflict { border-left: 4px solid #7c3aed; background: rgba(124, 58, 237, .10); padding: .5em .8em;
  margin: .3em 0 .6em; border-radius: 4px; }
.rag-conflict ul { margin: .3em 0 0 1.2em; }
.rag-conflict .rag-value { font-size: 1.05em; }
.rag-articles td.rag-published { white-space: nowrap; }
.rag-draft { border-left: 4px dashed var(--border-color-primary); padding: .2em .7em; }
.rag-draft-label { font-size: .85em; font-weight: 600; color: var(--body-text-color); }
.rag-draft-text { font-style: italic; color: var(--body-text-color-subdued); opacity: .8; }
"""


def offline_theme() -> gr.themes.Base:
    """The default look with system fonts only, so the page never asks Google Fonts (or anyone) for a font."""
    return gr.themes.Default(font=SANS, font_mono=MONO)


class ChatApp(gr.Blocks):
    """A gr.Blocks whose `launch` defaults are the offline ones: system-font theme, no share link, local host.

    Tests and `serve` may pass any launch option; only the ones left out get these defaults.
    """

    rag_settings: Settings

    def page_options(self) -> dict[str, Any]:
        """The options `launch` and `mount` share: offline theme, no monitoring, MCP or PWA, the login, the queue."""
        settings = self.rag_settings
        options: dict[str, Any] = {"theme": offline_theme(), "css": CSS, "footer_links": ["api", "settings"],
                                   "enable_monitoring": False, "mcp_server": False, "pwa": False,
                                   # Gradio's own cap only stops absurd uploads; the library checks
                                   # `max_upload_mb` with a clear reason.
                                   "max_file_size": f"{max(1, int(settings.max_upload_mb * 4))}mb"}
        if settings.auth:
            options["auth"] = parse_auth(settings.auth)
        # One request uses the models at a time (the events share concurrency_id "models"); at most `max_queue`
        # wait, and beyond that Gradio answers "This application is currently busy. Please try again."
        self.queue(max_size=settings.max_queue, default_concurrency_limit=1)
        return options

    def launch(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - gradio's (app, local_url, share_url)
        settings = self.rag_settings
        for name, value in self.page_options().items():
            kwargs.setdefault(name, value)
        kwargs.setdefault("share", False)
        kwargs.setdefault("server_name", settings.host)
        warning = settings.check_exposure(kwargs["server_name"], kwargs.get("auth"))
        if warning:
            print(warning, file=sys.stderr, flush=True)
        return super().launch(*args, **kwargs)

    def mount(self, app: Any, host: str, port: int) -> Any:
        """The page at "/" of a FastAPI app (the API's, in `rag chat`), with the same options as `launch`."""
        options = self.page_options()
        warning = self.rag_settings.check_exposure(host, options.get("auth"))
        if warning:
            print(warning, file=sys.stderr, flush=True)
        return gr.mount_gradio_app(app, self, path="/", server_name=host, server_port=port, ssr_mode=False,
                                   show_error=False, **options)


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SettingsError("setting auth: expected \"user:password\"")
    return user, password


def filtered_table(listed: list[ArticleInfo], text: str | None, since: str | None, until: str | None) -> str:
    """The articles newest first, as the filter keeps them (title, outlet or file holding `text`, published within
    since..until); a date that cannot be read is said, and the whole list stays out of the way."""
    try:
        kept = render.filter_articles(listed, text or "", user_date(since, "since"), user_date(until, "until"))
    except DateError as exc:
        return render.error_box(f"Check the filter's dates: {exc}")
    filtered = bool((text or "").strip() or since or until)
    return render.article_table(kept, len(listed) if filtered else None)


def question_problem(question: str, exc: QuestionError) -> str:
    if not (question or "").strip():
        return f"Please type a question first ({exc})."
    return f"This question cannot be asked: {exc}."


def generator_choices(settings: Settings) -> list[str]:
    return list(dict.fromkeys([*GENERATORS, settings.generator]))


def conversation(history: list[dict] | None) -> list[dict]:
    """The chat so far, as plain text, without the turns that ended in an error message or in an unchecked draft
    (a reply cut off before its checks): neither is part of the dialogue."""
    kept: list[dict] = []
    for message in history or []:
        if not isinstance(message, dict):
            kept.append(message)
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else [content]
        text = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p or "") for p in parts).strip()
        if message.get("role") == "assistant" and (text.startswith(WARNING) or render.is_draft(text)):
            if kept and kept[-1].get("role") == "user":
                kept.pop()
            continue
        kept.append({**message, "content": render.from_chat_text(text)})
    return kept


def said(role: str, text: str) -> dict[str, str]:
    """A chat message whose text shows as written: markup in a question or an answer is never rendered."""
    return {"role": role, "content": render.as_chat_text(text)}


def build_app(settings: Settings, corpus: Path | None = None) -> ChatApp:
    """The chat page over `corpus` (default: the settings' corpus folder)."""
    collection = Collection(corpus, settings)
    choices = generator_choices(settings)

    def chosen(top_k: float | None, generator: str | None) -> dict[str, Any]:
        """The page's controls as settings for one question."""
        name = generator if generator in choices else settings.generator
        return {"top_k": int(top_k or settings.top_k), "generator": name}

    def info(generator: str | None = None) -> str:
        try:
            return render.info_line(**collection.describe(**chosen(None, generator)))
        except EXPECTED_ERRORS as exc:
            return f'<div class="rag-info">{WARNING} {escape(str(exc))}</div>'

    def respond(question: str, history: list[dict] | None, top_k: float, generator: str, show_scores: bool,
                since: str | None = None, until: str | None = None) -> Iterator[tuple[list[dict], str, str, Any]]:
        history = list(history or [])
        prior = conversation(history)
        question = question or ""
        if question.strip():
            history.append(said("user", question))
        history.append(said("assistant", SEARCHING))
        last: Answer | Retrieval | None = None
        yield history, gr.skip(), "", gr.skip()
        pieces: list[str] = []
        try:
            for event in collection.stream_answer(question, prior, since or None, until or None,
                                                  **chosen(top_k, generator)):
                if isinstance(event, Retrieval):
                    last = event
                    history[-1] = said("assistant", READING.format(n=len(event.passages)))
                    yield history, render.render_retrieval(event, show_scores), "", last
                elif isinstance(event, Answer):
                    last = event
                    history[-1] = said("assistant", event.text)
                    yield history, render.render_answer(event, show_scores), "", last
                else:  # unchecked: shown as a draft until the Answer replaces it
                    pieces.append(event)
                    history[-1] = {"role": "assistant", "content": render.draft_bubble("".join(pieces))}
                    yield history, gr.skip(), "", gr.skip()
        except QuestionError as exc:
            history[-1] = said("assistant", f"{WARNING} {question_problem(question, exc)}")
            yield history, render.render_event(last, show_scores), question, last
        except DateError as exc:  # the question stays in its box and the dates in theirs, to be corrected
            history[-1] = said("assistant", f"{WARNING} Check the dates (published since / until): {exc}.")
            yield history, render.render_event(last, show_scores), question, last
        except EXPECTED_ERRORS as exc:
            log.warning("answering failed: %s", exc)
            history[-1] = said("assistant", f"{WARNING} Could not answer: {exc}")
            yield history, render.render_event(last, show_scores), question, last
        except Exception:  # a bug or a crashed model: say so in the chat, keep the traceback for the log
            log.exception("answering %r failed", question)
            history[-1] = said("assistant", f"{WARNING} {SERVER_FAULT}")
            yield history, render.render_event(last, show_scores), question, last

    def rerender(last: Answer | Retrieval | None, show_scores: bool) -> str:
        return render.render_event(last, show_scores)

    def clear() -> tuple[list, str, None, str]:
        return [], render.placeholder_sources(), None, ""

    def upload(files: list[str] | None, generator: str, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        paths = [Path(f) for f in files or []]
        if not paths:
            return gr.skip(), gr.skip(), None
        names = [p.name for p in paths]
        progress(0.0, desc=f"Checking and indexing {len(paths)} file(s)…")

        def indexing(update: IndexProgress) -> None:  # "Embedding 412/~1,005 chunks · 38/181 docs · 1m12s left"
            # a number always: Gradio shows the text only beside a bar (0 until the chunks expected are known)
            progress(update.fraction or 0.0, desc=update.describe())

        try:
            report = collection.add(paths, progress=indexing)
        except EXPECTED_ERRORS as exc:
            log.warning("upload failed: %s", exc)
            return render.error_box(f"Nothing was indexed: {exc}"), info(generator), None
        except Exception:
            log.exception("indexing the uploads %s failed", names)
            return render.error_box(f"Nothing was indexed: {SERVER_FAULT}"), info(generator), None
        progress(1.0, desc="Indexed")
        return render.upload_report(report, names), info(generator), None

    def articles_view(text: str | None = "", since: str | None = "", until: str | None = "") -> tuple[str, Any]:
        """The table of indexed articles as the filter keeps them (`filtered_table`), and the choices of the delete
        dropdown (every article)."""
        try:
            listed = collection.articles()
        except EXPECTED_ERRORS as exc:
            return render.error_box(f"The articles cannot be listed: {exc}"), gr.update(choices=[], value=None)
        choices = [(f"{a.title} ({a.doc_id})", a.doc_id) for a in listed]
        return filtered_table(listed, text, since, until), gr.update(choices=choices, value=None)

    def article_panel(text: str | None, since: str | None, until: str | None) -> str:
        """The table alone, when the filter changes (the delete dropdown keeps its choice)."""
        try:
            return filtered_table(collection.articles(), text, since, until)
        except EXPECTED_ERRORS as exc:
            return render.error_box(f"The articles cannot be listed: {exc}")

    def ask_delete(doc_id: str | None) -> tuple:
        """The first click: show what would be deleted and the confirm / cancel buttons; nothing changes yet."""
        try:
            chosen_article = next((a for a in collection.articles() if a.doc_id == doc_id), None)
        except EXPECTED_ERRORS as exc:
            return gr.update(visible=False), "", None, render.error_box(f"Nothing was deleted: {exc}")
        if chosen_article is None:
            return gr.update(visible=False), "", None, render.error_box("Choose an article to delete first.")
        return gr.update(visible=True), render.confirm_delete(chosen_article), chosen_article.doc_id, ""

    def cancel_delete() -> tuple:
        return gr.update(visible=False), "", None, ""

    def delete(doc_id: str | None, generator: str, *filtering: str | None) -> tuple:
        """The confirmed deletion of the article shown in the confirmation (kept server-side, not the dropdown)."""
        if not doc_id:
            status = render.error_box("Choose an article to delete first.")
        else:
            try:
                titles = {a.doc_id: a.title for a in collection.articles()}
                status = render.delete_report(collection.remove([doc_id]), titles)
            except EXPECTED_ERRORS as exc:
                log.warning("deleting %r failed: %s", doc_id, exc)
                status = render.error_box(f"Nothing was deleted: {exc}")
            except Exception:
                log.exception("deleting %r failed", doc_id)
                status = render.error_box(f"Nothing was deleted: {SERVER_FAULT}")
        return (gr.update(visible=False), "", None, status, info(generator), *articles_view(*filtering))

    def ask(question: str, top_k: int = 0, generator: str = "", since: str = "", until: str = "") -> dict:
        """Answer one question from the articles: the answer text with [n] markers, its checked citations
        (title, passage, supporting span, scores, publication date, outlet), whether it was refused, the
        retrieved passages, whether the articles disagree (conflict, conflict_groups) and the dates kept to.
        `since` / `until` (YYYY-MM-DD, optional) keep only articles published in that range."""
        if generator and generator not in choices:
            raise gr.Error(f"unknown generator {generator!r}: use one of {', '.join(choices)}")
        try:
            final = collection.answer(question, since=since or None, until=until or None,
                                      **chosen(top_k or None, generator or None))
        except QuestionError as exc:
            raise gr.Error(question_problem(question, exc)) from None
        except DateError as exc:
            raise gr.Error(f"Check the dates: {exc}") from None
        except EXPECTED_ERRORS as exc:
            raise gr.Error(f"Could not answer: {exc}") from None
        return final.to_dict()

    with ChatApp(title="Ask the news", analytics_enabled=False) as app:
        app.rag_settings = settings
        gr.Markdown("## Ask the news\nAnswers come only from the articles in the corpus, with the supporting "
                    "passages cited; nothing leaves this computer.", elem_id="intro")
        info_html = gr.HTML(elem_id="corpus-info", js_on_load=None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=360):
                chatbot = gr.Chatbot(label="Chat", elem_id="chat", height=520, buttons=["copy"],
                                     feedback_options=None, placeholder="Ask a question about the articles.")
                with gr.Row():
                    question = gr.Textbox(show_label=False, placeholder="Ask a question about the articles…",
                                          elem_id="question", scale=5, lines=1, max_lines=5, autofocus=True)
                    ask_button = gr.Button("Ask", variant="primary", elem_id="ask", scale=1, min_width=80)
                    clear_button = gr.Button("Clear chat", elem_id="clear", scale=1, min_width=80)
                with gr.Row(elem_id="ask-dates"):
                    since = gr.Textbox(label="Published since (optional)", placeholder=DATE_PLACEHOLDER,
                                       elem_id="since", max_lines=1, scale=1)
                    until = gr.Textbox(label="Published until (optional)", placeholder=DATE_PLACEHOLDER,
                                       elem_id="until", max_lines=1, scale=1)
                gr.Examples([[q] for q in EXAMPLES], inputs=[question], label="Example questions",
                            elem_id="examples", api_visibility="private", api_name="load_example")
            with gr.Column(scale=2, min_width=320):
                gr.Markdown("### Sources")
                sources = gr.HTML(render.placeholder_sources(), elem_id="sources", js_on_load=None)
        with gr.Row():
            with gr.Accordion("Settings", open=False, elem_id="settings"):
                top_k = gr.Slider(1, 10, value=settings.top_k, step=1, label="Passages to retrieve (top-k)",
                                  elem_id="top-k")
                generator = gr.Dropdown(choices, value=settings.generator, label="Generator", elem_id="generator")
                show_scores = gr.Checkbox(value=True, label="Show retrieval scores", elem_id="show-scores")
            with gr.Accordion("Add articles", open=False, elem_id="add-articles"):
                files = gr.File(label=f"Upload articles ({UPLOAD_TYPES}; up to {settings.max_upload_mb:g} MB each)",
                                file_count="multiple", elem_id="upload")
                upload_status = gr.HTML(elem_id="upload-status", js_on_load=None)
        with gr.Accordion("Articles", open=False, elem_id="articles"):
            with gr.Row(elem_id="article-filter"):
                filter_text = gr.Textbox(label="Filter by title, outlet or file", elem_id="filter-text",
                                         max_lines=1, scale=2)
                filter_since = gr.Textbox(label="Published since", placeholder=DATE_PLACEHOLDER,
                                          elem_id="filter-since", max_lines=1, scale=1)
                filter_until = gr.Textbox(label="Published until", placeholder=DATE_PLACEHOLDER,
                                          elem_id="filter-until", max_lines=1, scale=1)
            article_list = gr.HTML(elem_id="article-list", js_on_load=None)
            with gr.Row(equal_height=True):
                doomed = gr.Dropdown([], value=None, label="Article to delete", elem_id="delete-choice", scale=4)
                delete_button = gr.Button("Delete…", elem_id="delete", scale=1, min_width=100)
            with gr.Row(visible=False, elem_id="confirm-row") as confirm_row:
                confirm_text = gr.HTML(elem_id="confirm-text", js_on_load=None)
                confirm_button = gr.Button("Confirm delete", variant="stop", elem_id="confirm-delete", min_width=120)
                cancel_button = gr.Button("Cancel", elem_id="cancel-delete", min_width=80)
            delete_status = gr.HTML(elem_id="delete-status", js_on_load=None)
        filtering = [filter_text, filter_since, filter_until]
        pending_delete = gr.State(None)
        last = gr.State(None)

        gr.on([question.submit, ask_button.click], respond,
              inputs=[question, chatbot, top_k, generator, show_scores, since, until],
              outputs=[chatbot, sources, question, last], api_name="chat", api_visibility="private",
              concurrency_id="models", concurrency_limit=1, show_progress="hidden")
        clear_button.click(clear, outputs=[chatbot, sources, last, question], api_name="clear",
                           api_visibility="private", queue=False)
        chatbot.clear(clear, outputs=[chatbot, sources, last, question], api_name="clear_chat",
                      api_visibility="private", queue=False)
        show_scores.change(rerender, inputs=[last, show_scores], outputs=[sources], api_name="show_scores",
                           api_visibility="private", queue=False)
        files.upload(upload, inputs=[files, generator], outputs=[upload_status, info_html, files],
                     api_name="upload", api_visibility="private", concurrency_id="models", concurrency_limit=1
                     ).then(articles_view, inputs=filtering, outputs=[article_list, doomed], api_visibility="private")
        confirming = [confirm_row, confirm_text, pending_delete, delete_status]
        delete_button.click(ask_delete, inputs=[doomed], outputs=confirming, api_visibility="private", queue=False)
        cancel_button.click(cancel_delete, outputs=confirming, api_visibility="private", queue=False)
        confirm_button.click(delete, inputs=[pending_delete, generator, *filtering],
                             outputs=[*confirming, info_html, article_list, doomed], api_name="delete_article",
                             api_visibility="private", concurrency_id="models", concurrency_limit=1)
        generator.change(info, inputs=[generator], outputs=[info_html], api_name="model_info",
                         api_visibility="private")
        app.load(info, inputs=[generator], outputs=[info_html], api_name="corpus_info", api_visibility="private"
                 ).then(articles_view, inputs=filtering, outputs=[article_list, doomed], api_visibility="private")
        # typing in the text filter narrows at once; a date is applied when it is complete (Enter or leaving it)
        gr.on([filter_text.change, filter_since.submit, filter_since.blur, filter_until.submit, filter_until.blur],
              article_panel, inputs=filtering, outputs=[article_list], api_visibility="private", queue=False)
        gr.api(ask, api_name="ask", concurrency_id="models", concurrency_limit=1)
    return app


def serve_page(settings: Settings, corpus: Path | None = None) -> None:
    """Load the models and the index, then serve the chat page, and the API beside it under /v1 (docs at /docs),
    until interrupted (blocks). The API is left out on a non-loopback host without API keys (or --no-auth): the
    page's login does not cover it."""
    import uvicorn
    from fastapi import FastAPI

    from rag.server.app import create_app

    where = corpus or settings.corpus_dir
    print(f"loading {settings.generator} and {settings.embedder}, indexing {where} …", flush=True)
    Collection(corpus, settings).warm_up()
    try:
        settings.check_api_exposure()
        app = create_app(settings, corpus)
        api = f"; the API at http://{settings.host}:{settings.port}/v1 (docs at /docs)"
    except SettingsError as exc:
        app, api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None), f"; the API is not served: {exc}"
    build_app(settings, corpus).mount(app, settings.host, settings.port)
    print(f"chat page on http://{settings.host}:{settings.port}{api}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


__all__ = ["CSS", "EXAMPLES", "ChatApp", "build_app", "offline_theme", "serve_page"]
