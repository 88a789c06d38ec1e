"""Reading article files (.txt, .md, .html, .pdf) into documents, within size and time bounds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from rag.errors import BadInput
from rag.text import normalize_text
from rag.types import Document

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
MB = 1024 * 1024
# Bounds on reading a PDF (see _read_pdf): a news article is a few pages; a book-length PDF is refused.
PDF_MAX_PAGES = 2_000
PDF_MAX_SECONDS = 60.0
# Bounds on the name an upload gets in the corpus (see safe_article_name): far under the 255 bytes of a file name,
# leaving room for a "-N" suffix, a ".meta.json" sidecar and the hidden temporary names around it.
NAME_MAX_BYTES = 120
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(10)), *(f"LPT{n}" for n in range(10))}


class IngestError(BadInput, ValueError):
    """A file cannot be used as an article; the message names the file and the reason."""


# ---------------------------------------------------------------- reading files


def find_articles(paths: Iterable[Path]) -> list[Path]:
    """Every supported file under the given files and folders, sorted; hidden files are skipped."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise IngestError(f"{path}: unsupported file type {path.suffix or '(none)'}; "
                                  f"supported: {' '.join(SUPPORTED_SUFFIXES)}")
            found.add(path)
        else:
            raise IngestError(f"{path}: no such file or folder")
    return sorted(found)


def safe_article_name(name: str) -> str:
    """The file name an upload gets in the corpus, made from the name its sender gave (never trusted).

    Only the last part of a path counts (`../../x.txt`, `/etc/x.txt` and `C:\\\\x\\\\y.txt` give `x.txt` and
    `y.txt`); the name is NFC-normalised; any run of characters other than letters, digits (any script), `_`, `.`
    and `-` becomes one `-`: NUL and control characters, bidi and zero-width marks, spaces, `<>:"|?*`. A leading or
    trailing dot or dash is dropped (no hidden files), a Windows device name (CON, NUL, COM1, ...) gets an
    `article-` prefix, a name with nothing left is `article`, and the part before the suffix is cut to
    NAME_MAX_BYTES of UTF-8 at a character boundary. The suffix is lowercased; IngestError if it is unsupported.
    """
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name or ""))[-1]
    cleaned = re.sub(r"[^\w.-]+", "-", base).rstrip(".-")
    stem, dot, extension = cleaned.rpartition(".")
    suffix = f".{extension.lower()}" if dot else ""
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(f"{shown_name(name)}: unsupported file type {suffix or '(none)'}; "
                          f"supported: {' '.join(SUPPORTED_SUFFIXES)}")
    stem = stem.encode("utf-8")[:NAME_MAX_BYTES].decode("utf-8", "ignore").strip(".-") or "article"
    if stem.split(".")[0].upper() in WINDOWS_RESERVED:
        stem = f"article-{stem}"
    return stem + suffix


def shown_name(name: str, limit: int = 80) -> str:
    """A name as it may appear in a message: control and format characters as `?`, cut to `limit` characters."""
    visible = "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in name or "")
    return visible if len(visible) <= limit else visible[: limit - 1] + "…"


def read_document(path: Path, doc_id: str, max_mb: float) -> Document:
    """Read one article, raising IngestError with a specific reason when it cannot be used."""
    data = read_article_bytes(path, max_mb)
    sha256 = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() == ".pdf":  # compressed: its text is bounded by the same limit as a text file's
        title, text, body_start, meta = _read_pdf(path, data, max_chars=int(max_mb * MB))
    else:
        title, text, body_start, meta = _READERS.get(path.suffix.lower(), _read_plain)(path, data)
    if not text[body_start:].strip():
        raise IngestError(f"{path}: no text in it (empty file or only a title)")
    meta.update(_sidecar_meta(path))
    title = meta.pop("title", "") or title or path.stem.replace("-", " ").replace("_", " ")
    return Document(doc_id, normalize_text(title), text, str(path), sha256, body_start, meta)


def read_article_bytes(path: Path, max_mb: float) -> bytes:
    """An article file's bytes (its SHA-256 is the document's identity); IngestError when it is too large or
    cannot be read."""
    try:
        size = path.stat().st_size  # before reading: an oversized file is never read into memory
        if size <= max_mb * MB:
            with open(path, "rb") as handle:  # at most one byte over the limit, should the file grow meanwhile
                data = handle.read(int(max_mb * MB) + 1)
            size = len(data)
        if size > max_mb * MB:
            raise IngestError(f"{path}: {size / 1048576:.1f} MB is larger than the {max_mb:g} MB limit "
                              "(setting max_file_mb)")
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return data


def _decode(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise IngestError(f"{path}: looks like a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); "
                          "convert it, e.g. `iconv -f latin1 -t utf-8`") from None


def _read_plain(path: Path, data: bytes) -> tuple[str, str, int, dict]:
    """.txt/.md: optional front matter (--- YAML ---), then the first non-empty line is the title."""
    text = _decode(path, data).replace("\r\n", "\n").replace("\r", "\n")
    meta: dict[str, str] = {}
    body_start = 0
    if text.startswith("---\n"):
        import frontmatter

        end = text.find("\n---", 4)
        if end > 0:
            try:
                meta = {k: str(v) for k, v in frontmatter.loads(text[: end + 4]).metadata.items()}
            except Exception as exc:  # malformed YAML: frontmatter raises several types
                raise IngestError(f"{path}: the front-matter block is not valid YAML ({exc})") from None
            body_start = text.find("\n", end + 4) + 1 or len(text)
    first = re.search(r"\S[^\n]*", text[body_start:])
    title = ""
    if first and "title" not in meta:
        title = first.group(0).lstrip("# ").strip()
        body_start += first.end()
    return title, text, body_start, meta


def _read_html(path: Path, data: bytes) -> tuple[str, str, int, dict]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path, data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head:
        soup.head.decompose()
    heading = soup.find("h1")
    if not title and heading:
        title = heading.get_text(" ", strip=True)
    blocks = [b.get_text(" ", strip=True) for b in soup.find_all(["p", "li", "h1", "h2", "h3", "h4", "blockquote"])]
    text = "\n".join(b for b in blocks if b) or soup.get_text("\n", strip=True)
    return title, text, 0, {}


class _OutOfTime(Exception):
    """Raised inside pypdf's text extraction when the time for one PDF is up."""


def _read_pdf(path: Path, data: bytes, max_chars: int = 20 * MB) -> tuple[str, str, int, dict]:
    """A PDF's text, read within bounds: a small hostile file must not take unbounded time or memory.

    Measured with pypdf 7.1 on 2 cores: a 98 KB PDF whose content stream inflates to 100 MB of spaces stopped at
    pypdf's own 75 MB limit (with an exception this reader did not catch: it stopped the whole build); 70 MB of
    spaces took 4 s and 146 MB of memory; a 36 KB PDF gave 9.7 million characters in 10 s; 10,000 pages sharing
    one stream (1.5 MB) gave 10 million characters in 20 s; 100,000 pages took 160 s and 410 MB. So a PDF is read
    with: every stream inflating to at most `max_chars` bytes (pypdf's Configuration, pypdf 7 and later), at most
    PDF_MAX_PAGES pages, at most `max_chars` characters of text in all (what a text file of the size limit can
    hold) and at most PDF_MAX_SECONDS, checked at every operator of the page being read. Beyond any of them the
    file is refused with the reason; anything pypdf raises on a malformed file means "not a readable PDF".
    With the 10 MB upload limit the 100 MB stream is refused in 0.6 s (31 MB of memory), the 10,000 pages in
    1.5 s; 9 MB of text from a 32 KB file is read in 9 s (46 MB), as a 9 MB text file would be.
    """
    import io

    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    deadline = time.monotonic() + PDF_MAX_SECONDS

    def on_time(*_: object) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime

    try:
        with _pdf_limits(max_chars):
            reader = PdfReader(io.BytesIO(data))
            if len(reader.pages) > PDF_MAX_PAGES:
                raise IngestError(f"{path}: the PDF has more than {PDF_MAX_PAGES:,} pages ({len(reader.pages):,}), "
                                  "more than an article may have; refused")
            pages: list[str] = []
            total = 0
            for page in reader.pages:
                pages.append(page.extract_text(visitor_operand_before=on_time) or "")
                total += len(pages[-1])
                if total > max_chars:
                    raise IngestError(f"{path}: the PDF holds more than {max_chars / MB:g} MB of text, more than "
                                      "a text file may (a compressed 'zip bomb'?); refused")
            title = str((reader.metadata or {}).get("/Title") or "")
    except IngestError:
        raise
    except _OutOfTime:
        raise IngestError(f"{path}: reading the PDF's text took longer than {PDF_MAX_SECONDS:g} s; refused") from None
    except LimitReachedError as exc:
        what = (f"has more than {PDF_MAX_PAGES:,} pages" if "page tree" in str(exc) else
                f"has a stream that inflates beyond {max_chars / MB:g} MB (a compressed 'zip bomb'?)")
        raise IngestError(f"{path}: the PDF {what}; refused ({exc})") from None
    except Exception as exc:  # a malformed file can make pypdf raise nearly anything
        raise IngestError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise IngestError(f"{path}: the PDF has no extractable text (scanned images need OCR first)")
    return title, text, 0, {}


def _pdf_limits(max_bytes: int) -> contextlib.AbstractContextManager:
    """pypdf's own limits, lowered for this thread while one PDF is read: no stream inflates beyond `max_bytes`,
    and the page tree is not walked much past PDF_MAX_PAGES entries. Older pypdf (no Configuration): its fixed
    75 MB per stream; the page, text and time bounds of _read_pdf still hold."""
    import pypdf

    if not hasattr(pypdf, "apply_configuration"):
        return contextlib.nullcontext()
    current = pypdf.get_configuration()
    names = ("zlib_maximum_output_length", "lzw_maximum_output_length", "run_length_maximum_output_length",
             "brotli_maximum_output_length", "jbig2_maximum_output_length", "maximum_declared_stream_length",
             "array_based_stream_maximum_output_length", "stream_decoding_work_maximum_length")
    limits = {name: min(getattr(current, name), max_bytes) for name in names if hasattr(current, name)}
    if hasattr(current, "page_tree_maximum_entries"):
        limits["page_tree_maximum_entries"] = min(current.page_tree_maximum_entries, 2 * PDF_MAX_PAGES)
    return pypdf.apply_configuration(**limits)


_READERS: dict[str, Callable[[Path, bytes], tuple[str, str, int, dict]]] = {
    ".html": _read_html, ".htm": _read_html, ".pdf": _read_pdf,
}


def _sidecar_meta(path: Path) -> dict[str, str]:
    """Optional `<file>.meta.json` beside an article: {"title": ..., "source": ..., "date": ...}."""
    sidecar = path.with_name(path.name + ".meta.json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IngestError(f"{sidecar}: not valid JSON ({exc})") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
