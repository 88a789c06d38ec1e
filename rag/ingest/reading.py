"""Reading article files (.txt, .md, .html, .pdf) into documents, within size and time bounds."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

from rag.dates import EARLIEST_YEAR, dateline_agency, dateline_date, iso_date
from rag.errors import BadInput
from rag.text import normalize_text
from rag.types import Document

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
# Raised when what a file reads as changes (2: web pages through trafilatura, publication dates and outlets): an
# index built by an earlier reader is rebuilt (rag.indexing.build.fingerprint).
READER_VERSION = 2
MB = 1024 * 1024
# Bounds on reading a PDF (see _read_pdf): a news article is a few pages; a book-length PDF is refused.
PDF_MAX_PAGES = 2_000
PDF_MAX_SECONDS = 60.0
# Bounds on the name an upload gets in the corpus (see safe_article_name): far under the 255 bytes of a file name,
# leaving room for a "-N" suffix, a ".meta.json" sidecar and the hidden temporary names around it.
NAME_MAX_BYTES = 120
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(10)), *(f"LPT{n}" for n in range(10))}
# Bounds on reading a web page (see read_html_bytes). trafilatura's time grows with the number of elements, whatever
# their shape: measured on 2 cores, 100,000 elements took 4-9 s (nested <b>, flat <p>, <div>, <span>, table rows) and
# 1.2 million (7 MB of nested tags) 101 s and 1.3 GB; the 181 real news pages of the article-extraction benchmark have
# at most 1,596 elements (median 743), nested at most 51 deep. libxml2 stops building the tree 255 elements deep and
# drops the rest of the page, so a page that deep would be read cut short.
# Refusing 20 MB of tags after parsing them took 530 MB, so a page with more '<' than HTML_MAX_TAGS (each element
# has one or two; the benchmark's pages have at most 3,229) is refused before it is parsed: with both bounds a hostile
# page is refused in at most 0.2 s and 40 MB, and one just under them is read in at most 5 s.
HTML_MAX_ELEMENTS = 50_000
HTML_MAX_TAGS = 4 * HTML_MAX_ELEMENTS
HTML_MAX_DEPTH = 255
# Who published an article, and when, as a sidecar or front matter may name them (the first given wins).
OUTLET_KEYS = ("outlet", "publisher", "source")
DATE_KEYS = ("published", "date")
# Encodings a web page declares that browsers read as their Windows superset (WHATWG Encoding Standard).
_WINDOWS_FOR = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
                "ascii": "cp1252", "iso-8859-9": "cp1254", "tis-620": "cp874"}
_DECLARED_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([\w.:-]{1,40})""", re.IGNORECASE)


class IngestError(BadInput, ValueError):
    """A file cannot be used as an article; the message names the file and the reason."""


class Extracted(NamedTuple):
    """What reading one file gives: its title, text and where the body starts, its metadata as strings (front
    matter, a page's author and URL), and the publication date (ISO or "") and outlet its own markup or PDF
    metadata name (front matter dates and outlets stay in `meta`; read_document weighs every source)."""

    title: str
    text: str
    body_start: int
    meta: dict[str, str]
    published: str = ""
    outlet: str = ""


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
        found = _read_pdf(path, data, max_chars=int(max_mb * MB))
    else:
        found = _READERS.get(path.suffix.lower(), _read_plain)(path, data)
    text, body_start = found.text, found.body_start
    if not text[body_start:].strip():
        raise IngestError(f"{path}: no text in it (empty file or only a title)")
    sidecar = _sidecar_meta(path)
    meta = {**found.meta, **sidecar}
    title = meta.pop("title", "") or found.title or path.stem.replace("-", " ").replace("_", " ")
    published = _published(sidecar, found, text[body_start:])
    outlet = next((value for value in (*_keyed(sidecar, OUTLET_KEYS), *_keyed(found.meta, OUTLET_KEYS),
                                       found.outlet, dateline_agency(text[body_start:])) if value), "")
    return Document(doc_id, normalize_text(title), text, str(path), sha256, body_start, meta, published,
                    normalize_text(outlet))


def _published(sidecar: dict[str, str], found: Extracted, body: str) -> str:
    """The publication date, from the most trusted source that gives a readable one: a sidecar, front matter, the
    page's markup or the PDF's metadata, else a dateline at the start of the body; "" when none does (a date that
    cannot be read counts as none given)."""
    for value in (*_keyed(sidecar, DATE_KEYS), *_keyed(found.meta, DATE_KEYS), found.published):
        day = iso_date(value)
        if day:
            return day
    return dateline_date(body)


def _keyed(meta: dict[str, str], keys: tuple[str, ...]) -> list[str]:
    return [meta[key].strip() for key in keys if str(meta.get(key) or "").strip()]


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


def _read_plain(path: Path, data: bytes) -> Extracted:
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
    return Extracted(title, text, body_start, meta)


def _read_html(path: Path, data: bytes) -> Extracted:
    return read_html_bytes(data, source=str(path))


def read_html_bytes(data: bytes, url: str | None = None, source: str = "page") -> Extracted:
    """A web page's article: its main text (one paragraph a line; navigation, related links, comments, cookie
    banners and footers left out), title, author, URL, outlet (site name) and publication date, by trafilatura, with
    htmldate for the date. `url` is where the page was, when known (a saved file's is known only if the page names it
    in <link rel=canonical> or og:url); `source` names the page in error messages.

    htmldate reads the date from meta tags, JSON-LD, <time> and similar markup and the URL; its "extensive" search
    of the page's text is left off: when it finds no full date it falls back to the copyright year as 1 January
    (read_document looks for a dateline at the body's start instead). IngestError for binary data, an encoding that
    cannot be told, a page beyond HTML_MAX_TAGS, HTML_MAX_ELEMENTS or HTML_MAX_DEPTH, or one with no article
    text.
    """
    tags = data.count(b"<")
    if tags > HTML_MAX_TAGS:
        raise IngestError(f"{source}: the page has {tags:,} tags, far more than the {HTML_MAX_ELEMENTS:,} HTML "
                          "elements an article page may have (generated or hostile markup?); refused")
    import trafilatura

    tree = _html_tree(_html_markup(data, source), source)
    _quiet_extractors()
    try:
        page = trafilatura.bare_extraction(
            tree, url=url, with_metadata=True, include_comments=False, include_tables=True, favor_precision=True,
            date_extraction_params={"extensive_search": False, "original_date": True,
                                    "min_date": f"{EARLIEST_YEAR}-01-01", "max_date": date.today().isoformat()})
    except Exception as exc:  # trafilatura handles its own ValueError/TypeError; anything else is a page it cannot read
        raise IngestError(f"{source}: the page could not be read ({type(exc).__name__}: {exc})") from None
    text = "\n".join(line.strip() for line in (page.text if page else "").splitlines() if line.strip())
    if not text:
        raise IngestError(f"{source}: no text in it (no article text found in the page)")
    meta = {key: _clean(value) for key, value in (("author", page.author), ("url", page.url)) if _clean(value)}
    title = _clean(page.title) or _page_heading(tree)
    first_line = text.partition("\n")[0]
    body_start = len(first_line) + 1 if title and normalize_text(first_line) == title else 0  # a headline, as in .txt
    return Extracted(title, text, min(body_start, len(text)), meta, iso_date(page.date), _clean(page.sitename))


def _html_markup(data: bytes, source: str) -> str:
    """A page's bytes as text: UTF-8, else the charset its <meta> declares, else the encoding trafilatura guesses
    (trafilatura 2.3 itself reads no declared charset: UTF-8 or a charset_normalizer guess)."""
    if b"\x00" in data[:8192]:
        raise IngestError(f"{source}: looks like a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start
    declared = _DECLARED_CHARSET.search(data[:4096])
    if declared:
        name = declared.group(1).decode("ascii", "replace").lower()
        with contextlib.suppress(LookupError):
            return data.decode(codecs.lookup(_WINDOWS_FOR.get(name, name)).name, errors="replace")
    from trafilatura.utils import detect_encoding

    for guess in detect_encoding(data):
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            return data.decode(guess)
    raise IngestError(f"{source}: not UTF-8 text (invalid byte at offset {offset}) and no charset declared in a "
                      "<meta> tag; convert it, e.g. `iconv -f latin1 -t utf-8`")


def _html_tree(markup: str, source: str) -> Any:
    """The parsed page (lxml), refused beyond HTML_MAX_ELEMENTS elements or HTML_MAX_DEPTH deep, before trafilatura
    spends seconds per 100,000 elements on it."""
    from lxml import etree
    from trafilatura.utils import load_html

    tree = load_html(markup)
    if tree is None:  # trafilatura refuses a fragment (no <html>, one top element) as not HTML: read it wrapped
        tree = load_html(f"<html><body>{markup}</body></html>")
    if tree is None:
        raise IngestError(f"{source}: no text in it (not an HTML page)")
    count = depth = deepest = 0
    for event, _ in etree.iterwalk(tree, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        count, depth = count + 1, depth + 1
        deepest = max(deepest, depth)
        if count > HTML_MAX_ELEMENTS:
            raise IngestError(f"{source}: the page has more than the {HTML_MAX_ELEMENTS:,} HTML elements an article "
                              "page may have (generated or hostile markup?); refused")
    if deepest >= HTML_MAX_DEPTH:
        raise IngestError(f"{source}: the page's elements are nested {HTML_MAX_DEPTH} deep, where the HTML parser "
                          "stops reading the page (broken or hostile markup); refused")
    return tree


def _page_heading(tree: Any) -> str:
    for found in (tree.find(".//title"), tree.find(".//h1")):
        if found is not None and _clean(found.text_content()):
            return _clean(found.text_content())
    return ""


def _clean(value: object, limit: int = 300) -> str:
    """A metadata value from a page as one line of at most `limit` characters."""
    return normalize_text(str(value or ""))[:limit]


def _quiet_extractors() -> None:
    """trafilatura and htmldate log pages they discard as warnings and errors; the IngestError says it instead."""
    for name in ("trafilatura", "htmldate"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _OutOfTime(Exception):
    """Raised inside pypdf's text extraction when the time for one PDF is up."""


def _read_pdf(path: Path, data: bytes, max_chars: int = 20 * MB) -> Extracted:
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
            published, outlet, meta = _pdf_metadata(reader)
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
    return Extracted(title, text, 0, meta, published, outlet)


def _pdf_metadata(reader: Any) -> tuple[str, str, dict[str, str]]:
    """(publication date, publisher, {"author": ...}) from a PDF's document information and XMP metadata: the
    creation date (info, then XMP), else XMP dc:date, else the modification date; a /Publisher or XMP dc:publisher
    (a PDF's /Author is a person, its /Producer a program: neither is an outlet). Unreadable metadata is none."""
    try:
        info = reader.metadata or {}
        xmp = reader.xmp_metadata
        dates = [info.get("/CreationDate"), xmp and xmp.xmp_create_date, *((xmp and xmp.dc_date) or [])[:1],
                 info.get("/ModDate")]
        publishers = [info.get("/Publisher"), *((xmp and xmp.dc_publisher) or [])[:1]]
        author = _clean(info.get("/Author"))
    except Exception:  # a malformed info dictionary or XMP stream: pypdf raises many types
        return "", "", {}
    published = next((day for day in map(iso_date, dates) if day), "")
    return published, next((_clean(p) for p in publishers if _clean(p)), ""), {"author": author} if author else {}


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


_READERS: dict[str, Callable[[Path, bytes], Extracted]] = {
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
