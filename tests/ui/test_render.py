"""The page's HTML for dated news without a browser or a model: each source's date and outlet, the near-copies
folded into it, the disagreement box, the dates an answer kept to, and the Articles panel newest first with its
filter; the unchecked draft's box, and a chat history that never keeps a draft. Every piece of article or reply
text is escaped."""

from __future__ import annotations

from datetime import date

import pytest

from rag.types import Answer, ArticleInfo, Citation, Passage, Retrieval
from ui.render import article_table, conflict_box, filter_articles, newest_first, render_answer, render_retrieval

pytestmark = pytest.mark.unit

HOSTILE = "<script>alert(1)</script>"
QUESTION = "How much will the Harbor Bridge repairs in Norrport cost?"


def passage(chunk_id: int, doc_id: str, published: str, outlet: str, also_in: list | None = None) -> Passage:
    text = f"Repairs to the Harbor Bridge will cost ${chunk_id + 8}.2 million."
    return Passage(chunk_id, doc_id, f"Bridge story {chunk_id}", text, 0, len(text), (0, 0), rank=chunk_id + 1,
                   scores={"dense_similarity": 0.7}, published=published, outlet=outlet, also_in=also_in or [])


def cite(marker: int, p: Passage) -> Citation:
    return Citation(marker, p.chunk_id, p.doc_id, p.title, p.text, 0, len(p.text), p.text, 0.7, 1.0)


def test_sources_show_the_date_and_outlet_or_date_unknown() -> None:
    dated = passage(0, "ledger.md", "2024-05-02", "Coastal Ledger")
    undated = passage(1, "notes.txt", "", "")
    html = render_answer(Answer(QUESTION, "It costs $8.2 million [1].", [cite(1, dated)], False, [dated, undated]),
                         show_scores=False)
    assert '<span class="rag-outlet">Coastal Ledger</span> · <span class="rag-published">2024-05-02</span>' in html
    assert '<span class="rag-published rag-undated">date unknown</span>' in html  # the other retrieved passage
    streaming = render_retrieval(Retrieval(QUESTION, QUESTION, [dated]), show_scores=True)
    assert "2024-05-02" in streaming and "Coastal Ledger" in streaming


def test_near_copies_are_named_under_the_passage_and_escaped() -> None:
    copies = [{"doc_id": "a.txt", "title": HOSTILE, "published": "2024-05-04", "outlet": "<i>Echo</i>"},
              {"doc_id": "b.txt", "title": "Bridge bill & more", "published": "", "outlet": ""}]
    p = passage(0, "ledger.md", "2024-05-02", "Coastal <b>Ledger</b>", copies)
    html = render_answer(Answer(QUESTION, "It costs $8.2 million [1].", [cite(1, p)], False, [p]), False)
    assert "also in: 2 other articles (" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "(&lt;i&gt;Echo&lt;/i&gt;, 2024-05-04)" in html
    assert "Bridge bill &amp; more" in html and "(date unknown)" in html
    assert "<script>" not in html and "<i>" not in html and "<b>Ledger" not in html
    one = render_retrieval(Retrieval(QUESTION, QUESTION, [passage(1, "x.txt", "", "", copies[1:])]), False)
    assert "also in: 1 other article (" in one


def test_a_disagreement_is_shown_in_its_own_box_with_every_value_escaped() -> None:
    ledger, wire = passage(0, "ledger.md", "2024-05-02", "Coastal Ledger"), passage(1, "wire.txt", "2024-05-03",
                                                                                      "Metro Wire")
    groups = [{"value": "$8.2 million", "markers": [1], "sources": [
                  {"doc_id": "ledger.md", "title": "Harbor Bridge repairs", "published": "2024-05-02",
                   "outlet": "Coastal Ledger"}]},
              {"value": f"$9.5 million {HOSTILE}", "markers": [2], "sources": [
                  {"doc_id": "wire.txt", "title": HOSTILE, "published": "", "outlet": "Metro <b>Wire</b>"}]}]
    answer = Answer(QUESTION, "It costs $8.2 million [1]. The articles disagree: …", [cite(1, ledger), cite(2, wire)],
                    False, [ledger, wire], conflict=True, conflict_groups=groups)
    html = render_answer(answer, show_scores=True)
    box = html[html.index('<div class="rag-conflict"'):]
    assert box.startswith('<div class="rag-conflict" role="alert"><strong>The articles disagree</strong>')
    assert '<b class="rag-value">$8.2 million</b> <span class="rag-marker">[1]</span>' in box
    assert "Harbor Bridge repairs <span class=\"rag-when\">(Coastal Ledger, 2024-05-02)</span>" in box
    assert "(Metro &lt;b&gt;Wire&lt;/b&gt;, date unknown)" in box and "$9.5 million &lt;script&gt;" in box
    assert "<script>" not in html and "<b>Wire" not in html
    assert "rag-conflict" not in render_answer(Answer(QUESTION, "x [1].", [cite(1, ledger)], False, [ledger]), True)
    assert conflict_box([]).count("<li>") == 0


def test_the_dates_an_answer_kept_to_are_said() -> None:
    p = passage(1, "wire.txt", "2024-05-03", "Metro Wire")
    requested = {"since": "2024-05-03", "until": None, "latest": False, "phrase": "", "source": "request",
                 "applied": True}
    html = render_answer(Answer(QUESTION, "It costs $9.5 million [1].", [cite(1, p)], False, [p], dates=requested),
                         False)
    assert '<p class="rag-dates">Dates: published on or after 2024-05-03</p>' in html
    asked = {"since": "2024-03-01", "until": "2024-03-31", "latest": True, "phrase": f"in March {HOSTILE}",
             "source": "question", "applied": False}
    html = render_answer(Answer(QUESTION, "x [1].", [cite(1, p)], False, [p], dates=asked), False)
    assert "no relevant article 2024-03-01 to 2024-03-31, so every date was searched" in html
    assert "newest reports first" in html and "“in March &lt;script&gt;" in html and "<script>" not in html
    none = Answer(QUESTION, "No article in the collection is dated on or after 2030-01-01.", [], True, [],
                  refusal_reason="date-range", dates={**requested, "since": "2030-01-01"})
    html = render_answer(none, False)
    assert "no article is dated within the requested dates" in html and "on or after 2030-01-01" in html
    assert "rag-dates" not in render_answer(Answer(QUESTION, "x [1].", [cite(1, p)], False, [p]), False)


ARTICLES = [ArticleInfo("park.md", "Norrport opens a riverside park", "2024-04-20", 1, "2024-04-20", "Coastal Ledger"),
            ArticleInfo("notes.txt", "Undated <notes>", "2024-06-01", 2),
            ArticleInfo("wire.txt", "Norrport bridge repair bill", "2024-05-03", 1, "2024-05-03", "Metro Wire",
                        ["reprint.txt"]),
            ArticleInfo("ledger.md", "Harbor Bridge repairs", "2024-05-02", 1, "2024-05-02", "Coastal Ledger"),
            ArticleInfo("aardvark.txt", "Aardvark undated", "2024-06-02", 1)]


def test_the_articles_are_listed_newest_first_with_undated_last() -> None:
    assert [a.doc_id for a in newest_first(ARTICLES)] == ["wire.txt", "ledger.md", "park.md", "aardvark.txt",
                                                          "notes.txt"]
    html = article_table(ARTICLES)
    assert "<th>Published</th><th>Outlet</th>" in html
    rows = html.split("<tr data-doc=")[1:]
    assert [r.split('"')[1] for r in rows] == ["wire.txt", "ledger.md", "park.md", "aardvark.txt", "notes.txt"]
    assert '<td class="rag-published">2024-05-03</td><td class="rag-outlet">Metro Wire</td>' in rows[0]
    assert "near-copies: reprint.txt" in rows[0]
    assert 'title="file written 2024-06-01">date unknown</td>' in rows[4] and "Undated &lt;notes&gt;" in rows[4]
    assert "5 articles, 6 chunks" in html


def test_the_articles_filter_by_text_and_publication_date() -> None:
    assert [a.doc_id for a in filter_articles(ARTICLES, "norrport")] == ["park.md", "wire.txt"]
    assert [a.doc_id for a in filter_articles(ARTICLES, "  METRO wire ")] == ["wire.txt"]
    assert [a.doc_id for a in filter_articles(ARTICLES, "notes.txt")] == ["notes.txt"]
    may = filter_articles(ARTICLES, since=date(2024, 5, 2), until=date(2024, 5, 3))
    assert [a.doc_id for a in may] == ["wire.txt", "ledger.md"]  # inclusive; undated articles left out
    assert [a.doc_id for a in filter_articles(ARTICLES, until=date(2024, 5, 2))] == ["park.md", "ledger.md"]
    assert [a.doc_id for a in filter_articles(ARTICLES, "ledger", since=date(2024, 5, 1))] == ["ledger.md"]
    assert len(filter_articles(ARTICLES)) == 5
    html = article_table(may, shown_of=len(ARTICLES))
    assert "2 articles (of 5), 2 chunks" in html
    assert "No article matches the filter" in article_table([], shown_of=5)


def test_the_page_s_filter_says_when_a_date_cannot_be_read() -> None:
    from ui.app import filtered_table

    html = filtered_table(ARTICLES, "", "yesterday-ish<b>", "")
    assert "Check the filter&#x27;s dates" in html and "since" in html and "<b>" not in html
    assert "2 articles (of 5)" in filtered_table(ARTICLES, "", "2024-05-02", "2024-05-03")
    assert "5 articles, 6 chunks" in filtered_table(ARTICLES, "", "", None)


def test_the_draft_is_labelled_unchecked_and_escaped_with_its_line_breaks() -> None:
    from ui.render import DRAFT_LABEL, as_chat_text, draft_bubble, is_draft

    bubble = draft_bubble(f"Samsung has 10,000 <b>employees</b> [3].\n\n{HOSTILE} & more")
    assert bubble.startswith('<div class="rag-draft"') and is_draft(bubble)
    assert f'<div class="rag-draft-label" role="status">{DRAFT_LABEL}</div>' in bubble
    assert "10,000 &lt;b&gt;employees&lt;/b&gt; [3].<br><br>&lt;script&gt;" in bubble and "&amp; more" in bubble
    assert "<script>" not in bubble and "<b>" not in bubble and "\n" not in bubble  # no blank line ends the box
    assert not is_draft(as_chat_text(bubble))  # a checked reply quoting the markup is never taken for a draft


def test_a_draft_cut_off_before_its_checks_is_left_out_of_the_conversation() -> None:
    from ui.app import conversation
    from ui.render import draft_bubble

    answered = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Yoon [1]."}]
    cut_off = [{"role": "user", "content": "How many employees?"},
               {"role": "assistant", "content": [{"type": "text", "text": draft_bubble("10,000 [3].")}]}]
    assert conversation(answered + cut_off) == answered


def test_a_refusal_never_shows_the_rejected_reply_s_sentences() -> None:
    p = passage(0, "ledger.md", "2024-05-02", "Coastal Ledger")
    invented = "Samsung Electronics has 10,000 employees."
    refused = Answer(QUESTION, "The articles do not say.", [], True, [p], unsupported=[invented],
                     refusal_reason="unsupported", raw_text=invented + " [1]")
    html = render_answer(refused, show_scores=False)
    assert "No answer from the articles" in html and "10,000" not in html and "rag-unsupported" not in html
    answered = Answer(QUESTION, f"It costs $8.2 million [1]. {invented}", [cite(1, p)], False, [p],
                      unsupported=[invented])
    assert "Not supported by the passages" in render_answer(answered, show_scores=False)  # flagged, in an answer
