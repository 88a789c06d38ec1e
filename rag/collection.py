"""One folder of articles and its index, as one object: ask it, search it, add and remove articles, index it.

The page, the CLI and the API each hold a `Collection`; `rag.answer`, `rag.stream_answer` and `rag.retrieve` are
the default collection's shortcuts. Models are loaded once per process and shared by every collection (two
collections do not load the generator twice); a collection's index is loaded on first use and released by
`close()` (or leaving a `with` block).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rag.answering.flow import describe, final_answer, stream_answer, warm_up
from rag.arguments import BadArgument, PathArg, as_path, optional_path, text_items
from rag.indexing.articles import add_articles, list_articles, remove_articles
from rag.indexing.build import build_index, index_folder
from rag.retrieval import release, retrieve
from rag.settings import Settings, settings_or_default
from rag.types import Answer, ArticleInfo, IndexReport, Passage, ProgressCallback, Retrieval

T = TypeVar("T")
Event = Retrieval | str | Answer


class ClosedCollection(BadArgument):
    """A method of a collection was called after `close()`.

    >>> with rag.Collection("corpus") as news:
    ...     pass
    >>> news.articles()
    Traceback (most recent call last):
    rag.collection.ClosedCollection: Collection('corpus', closed) is closed: make a new Collection
    """


class Collection:
    """A folder of articles (`.txt`, `.md`, `.html`, `.pdf`; subfolders too) and its index.

    >>> from rag import Collection
    >>> with Collection("corpus") as news:
    ...     reply = news.answer("How much will South Korea invest in AI chips by 2027?")
    >>> reply.refused, reply.citations[0].doc_id
    (False, 'south-korea-ai-investment.txt')

    `path` defaults to the `corpus_dir` setting; `settings` to `load_settings()` (rag.toml, then RAG_*
    variables); `overrides` change single settings (`Collection("news", top_k=6)`), checked like every argument:
    a bad one raises a BadInput naming it. The index is brought up to date on first use (`auto_index`).
    """

    def __init__(self, path: PathArg | None = None, settings: Settings | None = None, **overrides: Any) -> None:
        base = settings_or_default(settings)
        self.settings = base.replace(**overrides) if overrides else base
        self.path: Path = optional_path(path, "path") or self.settings.corpus_dir
        self._closed = False

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}{', closed' if self._closed else ''})"

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release this collection's loaded index (the models stay loaded for other collections); later calls
        raise ClosedCollection."""
        if not self._closed:
            release(self.settings, self.path)
            self._closed = True

    @property
    def index_path(self) -> Path:
        """Where this collection's index is kept (`index_dir`, or a folder under it for another corpus)."""
        return index_folder(self.settings, self.path)

    # ------------------------------------------------------------ asking

    def answer(self, question: str, history: Any = None, since: Any = None, until: Any = None,
               **overrides: Any) -> Answer:
        """Answer a question from the articles, with citations, or refuse ("The articles do not say.").

        `history`: earlier turns, as message dicts (`{"role": "user", "content": …}`) or (question, answer) pairs;
        a follow-up is rewritten from them. `since` / `until`: only articles published in that range (a date or
        "YYYY-MM-DD", inclusive). `overrides`: settings for this question only (`top_k=6`).
        """
        return final_answer(self.stream_answer(question, history, since, until, **overrides))

    def stream_answer(self, question: str, history: Any = None, since: Any = None, until: Any = None,
                      **overrides: Any) -> Iterator[Event]:
        """As `answer`, as events: a Retrieval, then the reply's text pieces as generated, then the final Answer
        (whose checked text is the one to show). The arguments are checked now, before anything is loaded."""
        self._check_open()
        return stream_answer(question, history, self.settings, self.path, since, until, **overrides)

    async def aanswer(self, question: str, history: Any = None, since: Any = None, until: Any = None,
                      **overrides: Any) -> Answer:
        """`answer` for asyncio: the models run in a worker thread, so the event loop is never blocked."""
        events = self.stream_answer(question, history, since, until, **overrides)
        return await asyncio.to_thread(final_answer, events)

    def astream_answer(self, question: str, history: Any = None, since: Any = None, until: Any = None,
                       **overrides: Any) -> AsyncIterator[Event]:
        """`stream_answer` for asyncio (`async for event in news.astream_answer(q)`): each event is made in a
        worker thread. The arguments are checked when this is called."""
        return in_worker_thread(self.stream_answer(question, history, since, until, **overrides))

    def retrieve(self, question: str, k: int | None = None, since: Any = None, until: Any = None) -> list[Passage]:
        """The `k` best passages for a question (1 to 50; default: the `top_k` setting), best first; `since` /
        `until` keep only articles published in that range."""
        self._check_open()
        return retrieve(question, k, self.settings, self.path, since, until)

    def warm_up(self) -> None:
        """Load the models and the index now rather than on the first question."""
        self._check_open()
        warm_up(self.settings, self.path)

    def describe(self, **overrides: Any) -> dict[str, Any]:
        """What answers come from: documents and chunks indexed, generator, its engine, embedder."""
        self._check_open()
        return describe(self.settings.replace(**overrides) if overrides else self.settings, self.path)

    # ------------------------------------------------------------ the articles

    def articles(self) -> list[ArticleInfo]:
        """The articles the index holds, by title (id, title, date, chunks, publication date, outlet, copies)."""
        self._check_open()
        return list_articles(self.settings, self.path)

    def add(self, files: PathArg | Iterable[PathArg | tuple[PathArg, str]],
            progress: bool | ProgressCallback = False) -> IndexReport:
        """Copy article files (or every article in a folder) into the collection and index them: all or nothing.
        A (file, name) pair saves the file under that name (an upload's own name), made safe.

        A file that cannot be read as an article is named in `report.rejected`; the same bytes as an article
        already there in `report.duplicates`; a name already taken gets a numbered suffix (`report.renamed`).
        """
        self._check_open()
        return add_articles(_article_files(files), self.settings, self.path, progress=progress)

    def remove(self, article_ids: str | Iterable[str], progress: bool | ProgressCallback = False) -> IndexReport:
        """Delete articles (their ids, as `articles()` lists them) from the folder and the index: all or nothing."""
        self._check_open()
        return remove_articles(text_items(article_ids, "article_ids"), self.settings, self.path, progress=progress)

    def index(self, rebuild: bool = False, progress: bool | ProgressCallback = False,
              ray: str | None = None) -> IndexReport:
        """Bring the index up to date with the folder (only new or changed articles are embedded), or rebuild it.
        `progress`: True draws a progress line on stderr; a callable is told each step (rag.IndexProgress).
        `ray`: embed on a Ray cluster (an address, or "local"; the `scale` extra) instead of in this process."""
        self._check_open()
        if not isinstance(rebuild, bool):
            raise BadArgument(f"rebuild: expected True or False, got {rebuild!r:.80}")
        if not self.path.is_dir():
            raise BadArgument(f"path: {self.path} is not a folder of articles")
        return build_index([self.path], self.index_path, self.settings, rebuild=rebuild, progress=progress, ray=ray)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedCollection(f"{self!r} is closed: make a new Collection")


def _article_files(files: Any) -> list[Path | tuple[Path, str]]:
    """The files to add: one path or many (str or os.PathLike), a folder standing for the articles in it, a
    (file, name) pair for a file saved under another name."""
    from rag.ingest.reading import find_articles

    items = [files] if isinstance(files, (str, bytes)) or hasattr(files, "__fspath__") else files
    if not hasattr(items, "__iter__") or isinstance(items, (bytes, dict)):
        raise BadArgument(f"files: expected a path or a list of paths, got {type(files).__name__}")
    found: list[Path | tuple[Path, str]] = []
    for item in list(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
            found.append((_existing(as_path(item[0], "files")), item[1]))
            continue
        path = _existing(as_path(item, "files"))
        found += find_articles([path]) if path.is_dir() else [path]
    if not found:
        raise BadArgument("files: expected at least one article file, got none")
    return found


def _existing(path: Path) -> Path:
    if not path.exists():
        raise BadArgument(f"files: no such file or folder: {path}")
    return path


async def in_worker_thread(events: Iterator[T]) -> AsyncIterator[T]:
    """An iterator's items, each made in a worker thread (so a model's work never blocks the event loop); when the
    consumer stops early, the iterator is closed there too (a generation in progress is cut short)."""
    end = object()
    try:
        while (item := await asyncio.to_thread(next, events, end)) is not end:
            yield item  # type: ignore[misc]
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


async def aanswer(question: str, history: Any = None, settings: Settings | None = None,
                  corpus: PathArg | None = None, since: Any = None, until: Any = None, **overrides: Any) -> Answer:
    """`rag.answer` for asyncio: the default collection's (or `corpus`'s) `aanswer`; the models run in a worker
    thread, so the event loop is never blocked.

    >>> import asyncio
    >>> asyncio.run(rag.aanswer("How much will South Korea invest in AI chips by 2027?")).refused
    False
    """
    return await Collection(corpus, settings).aanswer(question, history, since, until, **overrides)


def astream_answer(question: str, history: Any = None, settings: Settings | None = None,
                   corpus: PathArg | None = None, since: Any = None, until: Any = None,
                   **overrides: Any) -> AsyncIterator[Event]:
    """`rag.stream_answer` for asyncio: the default collection's (or `corpus`'s) `astream_answer`.

    >>> import asyncio
    >>> async def kinds(question):
    ...     return [type(event).__name__ async for event in rag.astream_answer(question)]
    >>> asyncio.run(kinds("What did Zuckerberg discuss in Seoul?"))[-1]
    'Answer'
    """
    return Collection(corpus, settings).astream_answer(question, history, since, until, **overrides)
