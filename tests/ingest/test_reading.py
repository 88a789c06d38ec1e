"""Reading articles (rag/ingest/reading.py) and chunking them: titles, metadata, HTML and PDF text, bad and
hostile files, PDF bombs, and safe names for uploads."""

from pathlib import Path

import pytest

from rag.ingest.chunking import chunk_document
from rag.ingest.reading import IngestError, read_document
from rag.models.embedders import get_embedder
from rag.settings import Settings
from rag.text import normalize_text
from tests.conftest import SEED_ARTICLE, TEST_EMBEDDER, write


@pytest.fixture(scope="module")
def count_tokens():
    return get_embedder(Settings(embedder=TEST_EMBEDDER)).count_tokens


@pytest.mark.integration
def test_seed_article_title_and_paragraphs(count_tokens):
    doc = read_document(SEED_ARTICLE, "seed.txt", max_mb=20)
    assert doc.title == "South Korea is increasing investment in the AI field."
    chunks = chunk_document(doc, count_tokens, chunk_tokens=120, overlap_tokens=30)
    assert chunks[0].paragraphs[0] == 1 and chunks[-1].paragraphs[1] == 17
    for chunk in chunks:
        assert doc.text[chunk.start:chunk.end] == chunk.raw  # offsets map back to the exact original text
        assert chunk.text == normalize_text(chunk.raw)
        assert count_tokens(chunk.raw) <= 120 + 10
    joined = " ".join(c.text for c in chunks)
    for fact in ["909 billion won", "1.02 trillion won", "66.7%", "Lee Jong-ho", "2047"]:
        assert fact in joined


@pytest.mark.unit
def test_seed_article_reads_as_it_always_has():
    doc = read_document(SEED_ARTICLE, "seed.txt", max_mb=20)
    text = SEED_ARTICLE.read_text(encoding="utf-8")
    assert (doc.title, doc.text, doc.meta) == ("South Korea is increasing investment in the AI field.", text, {})
    assert doc.body_start == text.index("\n")  # just after the title line, as before
    assert (doc.published, doc.outlet) == ("", "")  # it names no date at its start: unknown


@pytest.mark.integration
def test_chunks_never_cut_a_sentence(count_tokens, tmp_path):
    sentences = [f"Sentence number {i} says that the value is {i * 7}.5 percent of the total." for i in range(40)]
    path = write(tmp_path / "a.txt", "Title line\n" + " ".join(sentences[:20]) + "\n" + " ".join(sentences[20:]))
    doc = read_document(path, "a.txt", 20)
    chunks = chunk_document(doc, count_tokens, chunk_tokens=60, overlap_tokens=20)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.raw.startswith("Sentence number") and chunk.raw.endswith("of the total.")
    # overlap: each chunk after the first begins with the previous chunk's last sentence
    assert all(b.raw.split(". ")[0] in a.raw for a, b in zip(chunks, chunks[1:], strict=False))


@pytest.mark.unit
def test_front_matter_and_sidecar_metadata(tmp_path):
    path = write(tmp_path / "b.md", "---\ntitle: Chip exports\nsource: Example News\ndate: 2024-03-01\n---\n"
                 "# Heading\nExports grew by 66.7% in February.\n")
    doc = read_document(path, "b.md", 20)
    assert doc.title == "Chip exports" and doc.meta["source"] == "Example News"
    assert "Exports grew" in doc.text[doc.body_start:]
    write(tmp_path / "c.txt.meta.json", '{"title": "From sidecar", "date": "2024"}')
    doc = read_document(write(tmp_path / "c.txt", "Own title\nBody text here."), "c.txt", 20)
    assert doc.title == "From sidecar" and doc.meta == {"date": "2024"}


@pytest.mark.unit
def test_html_drops_scripts_and_styles(tmp_path):
    path = write(tmp_path / "d.html", "<html><head><title>Chips</title><style>p{color:red}</style></head><body>"
                 "<script>alert('x')</script><h1>Chips</h1><p>Samsung makes memory chips.</p>"
                 "<p>SK Hynix too.</p></body></html>")
    doc = read_document(path, "d.html", 20)
    assert doc.title == "Chips"
    assert doc.text[doc.body_start:] == "Samsung makes memory chips.\nSK Hynix too."  # one paragraph a line
    assert "alert" not in doc.text and "color" not in doc.text


@pytest.mark.unit
def test_pdf_text_is_extracted(tmp_path):
    from reportlab.pdfgen import canvas

    path = tmp_path / "e.pdf"
    pdf = canvas.Canvas(str(path))
    pdf.setTitle("Semiconductor report")
    pdf.drawString(72, 720, "The cluster investment reaches 622 trillion won.")
    pdf.save()
    doc = read_document(path, "e.pdf", 20)
    assert doc.title == "Semiconductor report" and "622 trillion won" in doc.text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"", "no text"),
        ("only-title.txt", b"Just a title\n\n", "no text"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("latin1.txt", "Caf\u00e9 au lait\nCaf\u00e9 prices rose.".encode("latin-1"), "not UTF-8"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
    ],
)
def test_bad_files_get_specific_messages(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=reason) as info:
        read_document(path, name, 20)
    assert name in str(info.value)


@pytest.mark.unit
def test_size_limit(tmp_path):
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        handle.write(b"Title\n" + b"word " * (11 * 1024 * 1024 // 5))
    with pytest.raises(IngestError, match=r"big.txt: 11.0 MB is larger than the 10 MB limit"):
        read_document(path, "big.txt", max_mb=10)


@pytest.mark.unit
def test_missing_file(tmp_path):
    with pytest.raises(IngestError, match="cannot be read"):
        read_document(Path(tmp_path / "nope.txt"), "nope.txt", 20)


# ---------------------------------------------------------------- hostile names and PDFs (uploads)


def pdf_bytes(content: bytes, pages: int = 1) -> bytes:
    """A PDF whose `pages` pages all show one Flate-compressed content stream `content` (Helvetica text)."""
    import io
    import zlib

    stream = zlib.compress(content, 9)
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream)]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                b"/Contents 4 0 R >>"] * pages
    out, offsets = io.BytesIO(b"%PDF-1.4\n"), []
    out.seek(0, 2)
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


TEXT_LINE = b"BT /F1 12 Tf 72 720 Td (" + b"word " * 200 + b") Tj ET\n"  # 1,000 characters of text


@pytest.mark.unit
def test_a_generated_pdf_is_read(tmp_path):
    path = tmp_path / "ok.pdf"
    path.write_bytes(pdf_bytes(b"BT /F1 12 Tf 72 720 Td (Veltrana opens a drone factory in 2026.) Tj ET\n"))
    assert "drone factory in 2026" in read_document(path, "ok.pdf", 10).text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("content", "pages", "max_mb", "reason"),
    [  # unbounded, pypdf took 0.2 s and 151 MB to fail with an uncaught LimitReachedError on the first one
        (b"BT /F1 12 Tf 72 720 Td (Hello) Tj ET\n" + b" " * 100_000_000, 1, 10, "inflates beyond 10 MB"),
        (TEXT_LINE * 12_000, 1, 10, "inflates beyond 10 MB"),  # 12 MB of text from a 40 KB file
        (TEXT_LINE * 600, 2, 1, "more than 1 MB of text"),  # each page under the stream limit, together over
        (TEXT_LINE, 10_000, 10, "more than 2,000 pages"),  # 10 million characters over 10,000 pages
    ],
    ids=["100MB-of-spaces", "12MB-of-text", "text-over-pages", "10000-pages"],
)
def test_zip_bomb_like_pdfs_are_refused_within_bounds(tmp_path, content, pages, max_mb, reason):
    import time
    import tracemalloc

    path = tmp_path / "bomb.pdf"
    path.write_bytes(pdf_bytes(content, pages))
    assert path.stat().st_size < 2 * 1024 * 1024
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(IngestError, match=reason) as info:
            read_document(path, "bomb.pdf", max_mb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bomb.pdf" in str(info.value) and "refused" in str(info.value)
    assert peak < 80 * 1024 * 1024, f"{peak / 1e6:.0f} MB while refusing it"
    assert time.monotonic() - started < 60


@pytest.mark.unit
def test_pdf_reading_stops_at_its_time_limit(tmp_path, monkeypatch):
    import rag.ingest.reading

    path = tmp_path / "slow.pdf"
    path.write_bytes(pdf_bytes(TEXT_LINE, pages=3))
    assert read_document(path, "slow.pdf", 10).text.count("word") == 600
    monkeypatch.setattr(rag.ingest.reading, "PDF_MAX_SECONDS", 0.0)  # the check runs at every operator of a page
    with pytest.raises(IngestError, match="took longer than 0 s; refused"):
        read_document(path, "slow.pdf", 10)


HOSTILE_NAMES = [
    ("../../escape.txt", "escape.txt"),
    ("/etc/cron.d/job.txt", "job.txt"),
    ("C:\\Windows\\System32\\evil.TXT", "evil.txt"),
    ("..\\..\\up.md", "up.md"),
    ("a\x00b.txt", "a-b.txt"),
    ("x" * 300 + ".txt", "x" * 120 + ".txt"),
    ("é" * 200 + ".pdf", "é" * 60 + ".pdf"),  # 2 bytes each: cut at a character boundary
    (".hidden.md", "hidden.md"),
    ("..txt", "article.txt"),
    ("!!!  ???.html", "article.html"),
    ("a<b>c:d\"e|f?g*h.txt", "a-b-c-d-e-f-g-h.txt"),
    ("기사 2024.txt", "기사-2024.txt"),
    ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC
    ("evil\u202egpj.txt", "evil-gpj.txt"),  # a right-to-left override
    ("zero\u200bwidth.txt", "zero-width.txt"),
    ("CON.txt", "article-CON.txt"),
    ("nul.md", "article-nul.md"),
    ("-rf.txt", "rf.txt"),
    ("notes.txt.", "notes.txt"),
    ("Cluster news (final).txt", "Cluster-news-final.txt"),
    ("{0}%s{name}.txt", "0-s-name.txt"),  # format fields: a message built from the name must not expand them
]


@pytest.mark.unit
@pytest.mark.parametrize(("name", "expected"), HOSTILE_NAMES)
def test_hostile_names_become_safe_file_names(name, expected):
    from rag.ingest.reading import safe_article_name

    safe = safe_article_name(name)
    assert safe == expected
    assert len(safe.encode("utf-8")) <= 130 and "/" not in safe and "\\" not in safe and not safe.startswith(".")


@pytest.mark.unit
@pytest.mark.parametrize("name", ["x.exe", "x", "....", "x.tar.gz", "a\x00.txt\x00.exe", "/", "", "x.txt/"])
def test_names_of_unsupported_types_are_refused(name):
    from rag.ingest.reading import safe_article_name

    with pytest.raises(IngestError, match="unsupported file type") as info:
        safe_article_name(name)
    assert "\x00" not in str(info.value)
