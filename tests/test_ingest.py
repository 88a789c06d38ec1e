from pathlib import Path

import pytest

from rag.ingest import IngestError, chunk_document, read_document
from rag.models import get_embedder
from rag.settings import Settings
from rag.text import normalize_text
from tests.conftest import SEED_ARTICLE, write


@pytest.fixture(scope="module")
def count_tokens():
    return get_embedder(Settings()).count_tokens




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


def test_front_matter_and_sidecar_metadata(tmp_path):
    path = write(tmp_path / "b.md", "---\ntitle: Chip exports\nsource: Example News\ndate: 2024-03-01\n---\n"
                 "# Heading\nExports grew by 66.7% in February.\n")
    doc = read_document(path, "b.md", 20)
    assert doc.title == "Chip exports" and doc.meta["source"] == "Example News"
    assert "Exports grew" in doc.text[doc.body_start:]
    write(tmp_path / "c.txt.meta.json", '{"title": "From sidecar", "date": "2024"}')
    doc = read_document(write(tmp_path / "c.txt", "Own title\nBody text here."), "c.txt", 20)
    assert doc.title == "From sidecar" and doc.meta == {"date": "2024"}


def test_html_drops_scripts_and_styles(tmp_path):
    path = write(tmp_path / "d.html", "<html><head><title>Chips</title><style>p{color:red}</style></head><body>"
                 "<script>alert('x')</script><h1>Chips</h1><p>Samsung makes memory chips.</p>"
                 "<p>SK Hynix too.</p></body></html>")
    doc = read_document(path, "d.html", 20)
    assert doc.title == "Chips"
    assert "Samsung makes memory chips." in doc.text and "alert" not in doc.text and "color" not in doc.text


def test_pdf_text_is_extracted(tmp_path):
    from reportlab.pdfgen import canvas

    path = tmp_path / "e.pdf"
    pdf = canvas.Canvas(str(path))
    pdf.setTitle("Semiconductor report")
    pdf.drawString(72, 720, "The cluster investment reaches 622 trillion won.")
    pdf.save()
    doc = read_document(path, "e.pdf", 20)
    assert doc.title == "Semiconductor report" and "622 trillion won" in doc.text


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


def test_size_limit(tmp_path):
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        handle.write(b"Title\n" + b"word " * (11 * 1024 * 1024 // 5))
    with pytest.raises(IngestError, match=r"big.txt: 11.0 MB is larger than the 10 MB limit"):
        read_document(path, "big.txt", max_mb=10)


def test_missing_file(tmp_path):
    with pytest.raises(IngestError, match="cannot be read"):
        read_document(Path(tmp_path / "nope.txt"), "nope.txt", 20)
