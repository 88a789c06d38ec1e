"""A script as a user writes it: a folder of saved news pages as a collection, a question with its citations,
the articles listed, a search, and an asyncio answer. Type-checked with `mypy --strict` in `make test`.

    python examples/ask_my_news.py [FOLDER] [QUESTION]
"""

from __future__ import annotations

import asyncio
import sys

import rag


def show(reply: rag.Answer) -> None:
    print(reply.text)
    for citation in reply.citations:
        print(f"  [{citation.marker}] {citation.title} ({citation.published or 'undated'}): {citation.span_text}")


async def ask_later(news: rag.Collection, question: str) -> rag.Answer:
    return await news.aanswer(question)


def main(folder: str = "corpus", question: str = "How much will South Korea invest in AI chips by 2027?") -> int:
    try:
        with rag.Collection(folder, top_k=4) as news:
            for article in news.articles():
                print(f"{article.doc_id}: {article.title} ({article.chunks} chunks)")
            show(news.answer(question))
            passages: list[rag.Passage] = news.retrieve(question, k=2)
            print("best passage:", passages[0].title, f"{passages[0].relevance:.2f}")
            later = asyncio.run(ask_later(news, question))
            print("asked again (asyncio): refused" if later.refused else "asked again (asyncio): answered")
    except rag.BadInput as problem:  # a bad argument, question or setting: the message says which
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
