"""Reading news pages (rag/ingest/reading.py): the article without the page's boilerplate, the publication date and
outlet from every kind of source and in their order of trust, unknown and bad dates, hostile HTML, and three real
pages of the article-extraction benchmark read in place."""

from __future__ import annotations

import gzip
import io
import json
import time
from pathlib import Path

import pytest

from rag.ingest.chunking import paragraphs
from rag.ingest.reading import HTML_MAX_ELEMENTS, IngestError, read_document
from tests.conftest import REPO, write

PAGES = REPO / "tests" / "data" / "pages"
BENCHMARK = REPO.parent / "shared" / "benchmarks" / "article-extraction"
ARTICLE = [  # the article of tests/data/pages/ferry-service.html, one paragraph a line
    "The Lanternport harbour ferry will run after midnight again from next month, the city's transport board said on "
    "Thursday, ending a pause that began when the old vessel failed its safety inspection.",
    "The new boat, named Quillwort, carries 212 passengers and cost 14.6 million crowns, paid for by a regional fund "
    "and a surcharge of forty cents on daytime tickets.",
    "Night crossings will leave the Saltmarket pier every 40 minutes between midnight and four in the morning, the "
    "board's chair, Ilse Barrowby, told reporters at the pier.",
    "Hospital workers and bakers had petitioned for the service, collecting 9,380 signatures in six weeks, according "
    "to the union that organised the campaign.",
    "The board expects about 1,700 night passengers a week and will review the timetable after the first six months "
    "of operation.",
]
BOILERPLATE = [
    "cookies", "cookie preferences", "Politics desk", "Business and markets", "Sport results", "Subscribe",
    "Related stories", "Bridge tolls", "Tram line extension", "awning", "Comments (3)", "portwatcher77",
    "waiting for this ferry forever", "daylight robbery", "bicycles", "All rights reserved", "Contact the newsroom",
    "Privacy policy", "analyticsQueue", "position: fixed", "By Mira",
]
BODY = ("<p>The Lanternport council approved a budget of 88 million crowns for new street lighting on the eastern "
        "waterfront, its finance committee said.</p><p>Work on the first four streets starts in the autumn and the "
        "remaining eleven follow over the next two years, the committee's report says.</p>")


def page(head: str = "", before: str = "", title: str = "Street lights for the waterfront") -> str:
    """A small article page: `head` goes in <head>, `before` opens the article's body."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>{head}</head><body>"
            f"<article><h1>{title}</h1>{before}{BODY}</article></body></html>")


@pytest.mark.unit
def test_only_the_article_is_kept_from_a_news_page():
    doc = read_document(PAGES / "ferry-service.html", "ferry-service.html", 20)
    assert doc.title == "Harbour ferry resumes night service after two-year pause"
    assert doc.text[doc.body_start:].split("\n") == ARTICLE  # every paragraph, one a line, and nothing else
    assert [doc.text[start:end] for start, end in paragraphs(doc)] == ARTICLE
    kept = doc.text.lower()
    assert [phrase for phrase in BOILERPLATE if phrase.lower() in kept] == []
    assert (doc.published, doc.outlet) == ("2023-03-03", "The Lanternport Courier")
    assert doc.meta == {"author": "Mira Okonkwo-Vale", "url": "https://courier.example/news/harbour-ferry-night-service"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("head", "before", "expected"),
    [
        ("<meta property='article:published_time' content='2021-06-14T09:30:00Z'>", "", "2021-06-14"),
        ('<script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle", '
         '"headline": "Street lights", "datePublished": "2020-02-29T18:00:00+01:00"}</script>', "", "2020-02-29"),
        ("<link rel='canonical' href='https://courier.example/2019/11/18/street-lights-waterfront/'>", "",
         "2019-11-18"),
        ("", "<p class='meta'>Published <time datetime='2022-10-05T07:00:00Z'>on a Wednesday</time></p>",
         "2022-10-05"),
        ("", "<p>LANTERNPORT, Feb 7, 2021 (Courier) - The council met again on its usual day to discuss the "
         "lighting plans.</p>", "2021-02-07"),  # no date in the markup: the dateline at the body's start
        ("", "", ""),
    ],
    ids=["meta-tag", "json-ld", "url-only", "time-element", "dateline", "none"],
)
def test_a_page_date_from_each_kind_of_markup(tmp_path, head, before, expected):
    doc = read_document(write(tmp_path / "p.html", page(head, before)), "p.html", 20)
    assert doc.published == expected
    assert "88 million crowns" in doc.text


@pytest.mark.unit
@pytest.mark.parametrize(
    "head",
    [
        "<meta property='article:published_time' content='garbage-99-99'><meta name='date' content='not a date'>",
        "<meta property='article:published_time' content='3000-01-01T00:00:00Z'>",
        "<meta property='article:published_time' content='1066-10-14'>",
        '<script type="application/ld+json">{"datePublished": {"oops": [1, 2]}, "@type": "NewsArticle"}</script>',
        '<script type="application/ld+json">{"datePublished": "2021-13-45", </script>',  # not even JSON
    ],
    ids=["garbage", "year-3000", "before-1900", "json-ld-not-a-string", "json-ld-broken"],
)
def test_a_bad_date_in_a_page_is_unknown_not_an_error(tmp_path, head):
    doc = read_document(write(tmp_path / "p.html", page(head)), "p.html", 20)
    assert doc.published == "" and "88 million crowns" in doc.text


@pytest.mark.unit
def test_dates_and_outlets_of_text_files_sidecars_and_front_matter(tmp_path):
    dateline = "Lights on the quay\nSEOUL, March 3, 2023 (Reuters) - Lanternport's sister city said it would help.\n"
    doc = read_document(write(tmp_path / "a.txt", dateline), "a.txt", 20)
    assert (doc.title, doc.published, doc.outlet) == ("Lights on the quay", "2023-03-03", "Reuters")  # its agency
    assert read_document(write(tmp_path / "b.txt", "A title\nNo date is given here.\n"), "b.txt", 20).published == ""

    front = "---\ntitle: Quay lights\ndate: 2024-03-01\nsource: Harbour Weekly\n---\n" + dateline
    doc = read_document(write(tmp_path / "c.md", front), "c.md", 20)
    assert (doc.published, doc.outlet) == ("2024-03-01", "Harbour Weekly")  # front matter over the dateline
    assert doc.meta == {"date": "2024-03-01", "source": "Harbour Weekly"}

    write(tmp_path / "c.md.meta.json", json.dumps({"published": "5 January 2024", "publisher": "The Sidecar"}))
    doc = read_document(tmp_path / "c.md", "c.md", 20)
    assert (doc.published, doc.outlet) == ("2024-01-05", "The Sidecar")  # a sidecar over front matter

    bad = "---\ndate: not a date at all\n---\nSome title\nMarch 9, 2022 - a dateline after a bad front matter date.\n"
    doc = read_document(write(tmp_path / "d.md", bad), "d.md", 20)
    assert doc.published == "2022-03-09"  # an unreadable date counts as none given
    write(tmp_path / "e.txt.meta.json", '{"date": "sometime soon"}')
    assert read_document(write(tmp_path / "e.txt", "Title\nBody with no date.\n"), "e.txt", 20).published == ""


@pytest.mark.unit
def test_a_sidecar_outweighs_the_page_and_the_page_outweighs_its_dateline(tmp_path):
    head = "<meta property='article:published_time' content='2021-06-14'><meta property='og:site_name' content='LC'>"
    path = write(tmp_path / "p.html", page(head, "<p>LANTERNPORT, Feb 7, 2021 - The council met.</p>"))
    doc = read_document(path, "p.html", 20)
    assert (doc.published, doc.outlet) == ("2021-06-14", "LC")
    write(tmp_path / "p.html.meta.json", '{"date": "2020-01-31", "outlet": "Lanternport Courier"}')
    doc = read_document(path, "p.html", 20)
    assert (doc.published, doc.outlet) == ("2020-01-31", "Lanternport Courier")


def _pdf(path: Path, info: dict[str, str]) -> Path:
    """A one-page PDF (reportlab) whose document information is exactly `info` (pypdf)."""
    from pypdf import PdfReader, PdfWriter
    from reportlab.pdfgen import canvas

    drawn = io.BytesIO()
    pdf = canvas.Canvas(drawn)
    pdf.drawString(72, 720, "The harbour ferry carries 212 passengers at night.")
    pdf.save()
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(drawn.getvalue())))
    writer.metadata = info
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


@pytest.mark.unit
@pytest.mark.parametrize(
    ("info", "published", "outlet"),
    [
        ({"/CreationDate": "D:20230303120000+09'00'", "/ModDate": "D:20240101000000Z", "/Publisher": "LC Press",
          "/Author": "Mira Okonkwo-Vale", "/Producer": "Some PDF Library 1.0"}, "2023-03-03", "LC Press"),
        ({"/ModDate": "D:20220815093000Z", "/Producer": "Some PDF Library 1.0"}, "2022-08-15", ""),
        ({"/CreationDate": "D:garbage", "/Title": "Ferry report"}, "", ""),
    ],
    ids=["creation-date", "modification-date", "garbage"],
)
def test_a_pdf_date_from_its_metadata(tmp_path, info, published, outlet):
    doc = read_document(_pdf(tmp_path / "f.pdf", info), "f.pdf", 20)
    assert (doc.published, doc.outlet) == (published, outlet)
    assert "212 passengers" in doc.text
    assert doc.meta == ({"author": info["/Author"]} if "/Author" in info else {})


@pytest.mark.unit
def test_a_page_in_a_declared_legacy_encoding_is_read(tmp_path):
    path = tmp_path / "latin.html"
    path.write_bytes(page("", "<p>Le café coûte trois couronnes à Lanternport, a déclaré le conseil.</p>")
                     .replace("charset='utf-8'", "charset='windows-1252'").encode("cp1252"))
    assert "Le café coûte trois couronnes" in read_document(path, "latin.html", 20).text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("binary.html", b"<html>\x00\x01\x02\x89PNG", "binary"),
        ("empty.html", b"", "no text"),
        ("no-text.html", b"<html><head><title>Only a title</title><script>var x = 1;</script></head><body>"
         b"<style>p {}</style></body></html>", "no text"),
        ("headline-only.html", page().replace(BODY, "").encode(), "no text"),
        ("nested-100000.html", b"<html><body>" + b"<div>" * 100_000 + b"<p>Deep text.</p>" + b"</div>" * 100_000
         + b"</body></html>", "200,006 tags, far more than"),
        ("nested-1000.html", b"<html><body>" + b"<div>" * 1000 + b"<p>Deep text.</p>" + b"</div>" * 1000
         + b"</body></html>", "nested 255 deep"),
        ("broken.html", b"<<html><p<p>>" * 10_000 + b"<p>Text</p", "nested 255 deep"),
        ("many.html", b"<html><body>" + b"<p>Word word word.</p>" * (HTML_MAX_ELEMENTS + 10) + b"</body></html>",
         "more than the 50,000 HTML elements"),
        ("void.html", b"<html><body><p>" + b"<br>" * (HTML_MAX_ELEMENTS + 10) + b"</p></body></html>",
         "more than the 50,000 HTML elements"),
        ("tags-19mb.html", b"<html><body>" + b"<p><b>x</b></p>" * 1_300_000 + b"</body></html>",
         "5,200,004 tags, far more than the 50,000 HTML elements"),
    ],
)
def test_hostile_and_empty_pages_are_refused_quickly(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(IngestError, match=reason) as info:
        read_document(path, name, 20)
    assert str(info.value).startswith(str(path))
    assert time.monotonic() - started < 10  # unbounded, trafilatura took 74 s on 20 MB of tags


@pytest.mark.unit
def test_an_oversized_page_is_refused_before_it_is_read(tmp_path):
    path = write(tmp_path / "big.html", page(before="<p>" + "word " * 300_000 + "</p>"))
    with pytest.raises(IngestError, match=r"big.html: 1.4 MB is larger than the 1 MB limit"):
        read_document(path, "big.html", max_mb=1)


@pytest.mark.unit
def test_broken_markup_with_text_is_read_or_refused_never_a_crash(tmp_path):
    pieces = ["<p>Unclosed paragraph about the ferry timetable and its forty-minute crossings", "<div><span>",
              "</table></td>", "<![CDATA[ x ]]>", "<p class='a' class='b'>Duplicate attributes here.", "&bogus;",
              "<script>never closed"]
    path = write(tmp_path / "broken.html", "<html><body>" + "".join(pieces) * 200)
    try:
        doc = read_document(path, "broken.html", 20)
    except IngestError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert "ferry timetable" in doc.text


@pytest.mark.unit
@pytest.mark.skipif(not (BENCHMARK / "ground-truth.json").is_file(),
                    reason=f"the article-extraction benchmark is not at {BENCHMARK} (../shared/benchmarks)")
def test_real_pages_of_the_benchmark_are_read_in_place():
    """The first three pages of the ground truth (not chosen by their score), read where they lie and scored with
    the benchmark's own 4-word shingles (evaluate.py)."""
    from tools.bench_extraction import scorer, url_date

    evaluate = scorer(BENCHMARK)
    truth = json.loads((BENCHMARK / "ground-truth.json").read_text(encoding="utf-8"))
    for key in list(truth)[:3]:
        path = BENCHMARK / "html" / f"{key}.html.gz"
        from rag.ingest.reading import read_html_bytes

        doc = read_html_bytes(gzip.decompress(path.read_bytes()), source=str(path))
        tp, fp, fn = evaluate.string_shingle_matching(true=truth[key]["articleBody"], pred=doc.text[doc.body_start:])
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        assert 2 * precision * recall / (precision + recall) >= 0.9, (key, precision, recall)
        assert doc.published.startswith("2019-11-") and doc.title and doc.outlet
        assert url_date(truth[key]["url"]) in ("", doc.published)
