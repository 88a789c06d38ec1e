"""The Python API as people call it: a corpus given as a str, arguments out of range refused by name, and the
Collection object (ask, search, add, list, remove, index, close; async) over real models and real index files."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

import rag
from rag import BadArgument, BadInput, ClosedCollection, Collection, SettingsError
from tests.conftest import SEED_ARTICLE, make_settings, write

QUESTION = "How much will South Korea invest in AI chips by 2027?"


@pytest.fixture(scope="module")
def news(tmp_path_factory) -> tuple[Path, rag.Settings]:
    """A folder of articles that is not the settings' corpus folder (as a user's "my_news"), indexed once."""
    tmp = tmp_path_factory.mktemp("api")
    folder = tmp / "my_news"
    write(folder / SEED_ARTICLE.name, SEED_ARTICLE.read_text(encoding="utf-8"))
    settings = make_settings(tmp)
    Collection(folder, settings).index()
    return folder, settings


# ---------------------------------------------------------------- the three defects


@pytest.mark.integration
def test_a_corpus_given_as_a_str_works_like_a_path(news):
    folder, settings = news
    as_text = rag.answer(QUESTION, settings=settings, corpus=str(folder))
    as_path = rag.answer(QUESTION, settings=settings, corpus=folder)
    assert not as_text.refused and as_text.text == as_path.text
    assert [c.doc_id for c in as_text.citations] == [c.doc_id for c in as_path.citations]
    assert rag.retrieve("chip investment", settings=settings, corpus=str(folder))[0].doc_id == SEED_ARTICLE.name


@pytest.mark.unit
@pytest.mark.parametrize("top_k", [0, -1, 21, 50, 2.5, True, "many"])
def test_top_k_out_of_range_is_an_error_naming_it_not_a_refusal(top_k):
    with pytest.raises(SettingsError, match=r"top_k: expected .*1 to 20") as raised:
        rag.stream_answer(QUESTION, top_k=top_k)  # checked when called, before a model loads
    assert isinstance(raised.value, BadInput)


@pytest.mark.unit
@pytest.mark.parametrize(("arguments", "message"), [
    ({"k": 0}, r"^k: expected a whole number from 1 to 50, got 0"),
    ({"k": 51}, r"^k: expected a whole number from 1 to 50"),
    ({"k": "3"}, r"^k: expected a whole number"),
    ({"corpus": 3}, r"^corpus: expected a path \(str or os.PathLike\), got int"),
    ({"corpus": ""}, r"^corpus: expected a path"),
    ({"settings": {"top_k": 3}}, r"^settings: expected a rag.Settings"),
])
def test_retrieve_names_the_bad_argument(arguments, message):
    with pytest.raises(BadInput, match=message):
        rag.retrieve("chip investment", **arguments)


@pytest.mark.unit
def test_a_badly_shaped_history_names_its_item():
    with pytest.raises(rag.QuestionError, match=r"history item 1: expected a message dict"):
        rag.stream_answer(QUESTION, history=[{"role": "user", "content": "Hi"}, 42])
    with pytest.raises(SettingsError, match="unknown setting"):
        rag.stream_answer(QUESTION, topk=3)


@pytest.mark.unit
def test_settings_take_paths_as_str():
    assert rag.Settings(corpus_dir="my_news").corpus_dir == Path("my_news")
    with pytest.raises(SettingsError, match="corpus_dir: expected a path"):
        rag.Settings(corpus_dir=7)


# ---------------------------------------------------------------- the collection


@pytest.mark.integration
def test_a_collection_adds_lists_answers_and_removes(tmp_path, news):
    _, settings = news
    folder = tmp_path / "collection"
    write(folder / SEED_ARTICLE.name, SEED_ARTICLE.read_text(encoding="utf-8"))
    extra = write(tmp_path / "incoming" / "harbour.txt", "Harbour reopens after storm\n\nThe port of Busan "
                  "reopened on Monday after a storm closed it for three days, the port authority said.")
    with Collection(str(folder), settings) as news_collection:
        assert news_collection.index().added == [SEED_ARTICLE.name]
        report = news_collection.add(str(extra))
        assert report.added == ["harbour.txt"] and (folder / "harbour.txt").is_file()
        assert {a.doc_id for a in news_collection.articles()} == {SEED_ARTICLE.name, "harbour.txt"}
        found = news_collection.retrieve("When did the port of Busan reopen?", k=1)
        assert [p.doc_id for p in found] == ["harbour.txt"]
        reply = news_collection.answer(QUESTION)
        assert not reply.refused and reply.citations[0].doc_id == SEED_ARTICLE.name
        assert json.loads(json.dumps(reply.to_dict()))["citations"][0]["doc_id"] == SEED_ARTICLE.name
        removed = news_collection.remove("harbour.txt")
        assert removed.removed == ["harbour.txt"] and not (folder / "harbour.txt").exists()
        with pytest.raises(BadArgument, match="files: no such file or folder"):
            news_collection.add(tmp_path / "missing.txt")
        with pytest.raises(BadArgument, match="article_ids: expected at least one"):
            news_collection.remove([])
    with pytest.raises(ClosedCollection, match="is closed"):
        news_collection.answer(QUESTION)


@pytest.mark.integration
def test_a_collection_indexes_a_folder_with_progress(tmp_path, news):
    _, settings = news
    folder = tmp_path / "fresh"
    write(folder / SEED_ARTICLE.name, SEED_ARTICLE.read_text(encoding="utf-8"))
    steps: list[rag.IndexProgress] = []
    report = Collection(folder, settings).index(progress=steps.append)
    assert report.added == [SEED_ARTICLE.name] and report.chunks > 0
    assert steps and steps[-1].documents_done == 1
    assert Collection(folder, settings).index().changed is False  # up to date: nothing embedded again
    with pytest.raises(BadArgument, match="path: .* is not a folder of articles"):
        Collection(folder / SEED_ARTICLE.name, settings).index()


@pytest.mark.integration
def test_the_async_answer_leaves_the_event_loop_free(news):
    folder, settings = news
    collection = Collection(folder, settings)

    async def main() -> tuple[rag.Answer, list, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(ticker())
        started = time.perf_counter()
        reply = await collection.aanswer(QUESTION)
        seconds = time.perf_counter() - started
        events = [event async for event in collection.astream_answer(QUESTION)]
        beat.cancel()
        return reply, events, ticks / max(seconds, 1e-9)

    reply, events, ticks_per_s = asyncio.run(main())
    assert not reply.refused and isinstance(events[0], rag.Retrieval) and isinstance(events[-1], rag.Answer)
    assert events[-1].text == reply.text
    assert ticks_per_s > 20  # the loop ran its 10 ms ticks while the models worked in a thread
    with pytest.raises(SettingsError, match="top_k"):
        collection.astream_answer(QUESTION, top_k=0)  # checked when called, not when iterated


@pytest.mark.integration
def test_closing_releases_the_index_and_the_folder_can_be_reopened(tmp_path, news):
    _, settings = news
    folder = tmp_path / "reopened"
    shutil.copytree(news[0], folder)
    first = Collection(folder, settings)
    assert first.retrieve("chip investment", k=2)
    first.close()
    assert Collection(folder, settings).retrieve("chip investment", k=2)[0].doc_id == SEED_ARTICLE.name
