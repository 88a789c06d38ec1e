"""How well web pages are read: article text scored by the article-extraction benchmark's own scorer, dates found.

`python -m tools.bench_extraction [--path ../shared/benchmarks/article-extraction] [--reader trafilatura|today]
[--with-url]` reads the benchmark's 181 saved news and blog pages in place (`html/<key>.html.gz`; never copied) with
the project's reader (`rag.ingest.reading.read_html_bytes`, what read_document uses for .html) or with the
BeautifulSoup pass it replaced (`today`, kept here for the before figure; it needs beautifulsoup4, no longer a
dependency of the project), and prints:

- precision, recall and F1 of the article body and accuracy (nearly exact bodies), computed by the benchmark's
  `evaluate.py` (imported from the folder in place): 4-word shingles per page, averaged over pages;
- dates: the share of all pages given a publication date, and the share of the pages that carry a date in their
  markup or URL given one. A page "carries" a date when, read with lxml and `rag.dates.iso_date` (not htmldate,
  which the reader uses), its ground-truth URL holds a year/month/day path (`/2019/11/18/`, `2019-11-18`), or it has
  a <meta> tag whose name, property or itemprop mentions date/publish/created/modified/updated, an element with
  itemprop datePublished/dateCreated/dateModified, a <time datetime>, or JSON-LD datePublished/dateCreated/
  dateModified, with a value that reads as a date. Of the pages whose URL holds a date, how many were given that
  very date is printed too (a check of the dates, not only of their presence);
- the seconds the reader took for all pages (reading only, not scoring).

By default the reader gets no URL, as for a saved file in the corpus (it knows a URL only where the page names its
own in <link rel=canonical> or og:url); `--with-url` passes the ground truth's `url`, which the benchmark knows.
A page the reader refuses (IngestError) counts as an empty body and no date.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rag.dates import iso_date
from rag.ingest.reading import IngestError, read_html_bytes

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "article-extraction"
_URL_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})[/-](\d{1,2})[/-](\d{1,2})(?!\d)")
_DATE_NAME = re.compile(r"date|publish|created|modified|updated", re.IGNORECASE)
_JSON_LD_DATE = re.compile(r'"date(?:Published|Created|Modified)"\s*:\s*"([^"]{1,60})"')
Reader = Callable[[bytes, str | None], tuple[str, str]]  # page bytes, URL -> (body text, ISO date or "")


def scorer(folder: Path) -> ModuleType:
    """The benchmark's own evaluate.py, imported from its folder (read-only, not copied)."""
    spec = importlib.util.spec_from_file_location("article_extraction_evaluate", folder / "evaluate.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{folder}: no evaluate.py there")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_reader(data: bytes, url: str | None) -> tuple[str, str]:
    try:
        page = read_html_bytes(data, url=url)
    except IngestError:
        return "", ""
    return page.text[page.body_start:], page.published  # the body, as it is chunked (a headline line is the title)


def today_reader(data: bytes, url: str | None) -> tuple[str, str]:
    """The BeautifulSoup pass rag/ingest/reading.py used before trafilatura (as it was in git): UTF-8 only, every
    <p>, <li>, heading and quote outside <nav>/<footer>/scripts; it read no dates."""
    try:
        from bs4 import BeautifulSoup
    except ImportError:
        raise SystemExit("--reader today needs beautifulsoup4: .venv/bin/pip install beautifulsoup4") from None
    try:
        markup = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "", ""  # it refused the page: "not UTF-8 text"
    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    if soup.head:
        soup.head.decompose()
    blocks = [b.get_text(" ", strip=True) for b in soup.find_all(["p", "li", "h1", "h2", "h3", "h4", "blockquote"])]
    return "\n".join(b for b in blocks if b) or soup.get_text("\n", strip=True), ""


READERS: dict[str, Reader] = {"trafilatura": project_reader, "today": today_reader}


def url_date(url: str) -> str:
    found = _URL_DATE.search(url or "")
    return iso_date("-".join(f"{int(part):02d}" for part in found.groups())) if found else ""


def carries_date(data: bytes, url: str) -> bool:
    """Whether the page has a date in its URL or markup (see the module's docstring), read independently of
    htmldate."""
    from lxml import html

    if url_date(url):
        return True
    try:
        tree = html.fromstring(data)
    except (ValueError, TypeError, SyntaxError):
        return False
    values = [meta.get("content") for meta in tree.iter("meta")
              if _DATE_NAME.search(" ".join(meta.get(a) or "" for a in ("name", "property", "itemprop")))]
    values += [el.get("content") or el.get("datetime") or el.text_content()
               for el in tree.xpath("//*[@itemprop='datePublished' or @itemprop='dateCreated' "
                                    "or @itemprop='dateModified']")]
    values += [el.get("datetime") for el in tree.iter("time")]
    for script in tree.xpath("//script[@type='application/ld+json']"):
        values += _JSON_LD_DATE.findall(script.text_content())
    return any(iso_date(value) for value in values if value)


def run(folder: Path, reader: Reader, with_url: bool) -> dict[str, float]:
    """Read every page of the benchmark with `reader`, score it and count dates."""
    evaluate = scorer(folder)
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    matches, accuracies, seconds = [], [], 0.0
    dated = carrying = carrying_dated = url_dated = url_agrees = 0
    for key, expected in truth.items():
        data = gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes())
        started = time.perf_counter()
        text, published = reader(data, expected["url"] if with_url else None)
        seconds += time.perf_counter() - started
        matches.append(evaluate.string_shingle_matching(true=expected["articleBody"], pred=text))
        accuracies.append(evaluate.get_accuracy(true=expected["articleBody"], pred=text))
        carries = carries_date(data, expected["url"])
        dated += bool(published)
        carrying += carries
        carrying_dated += carries and bool(published)
        if url_date(expected["url"]):
            url_dated += 1
            url_agrees += published == url_date(expected["url"])
    scores = evaluate.metrics_from_tp_fp_fns(matches)
    return {**scores, "accuracy": sum(accuracies) / len(accuracies), "pages": len(truth), "dated": dated,
            "carrying": carrying, "carrying_dated": carrying_dated, "url_dated": url_dated,
            "url_agrees": url_agrees, "seconds": seconds}


def report(name: str, result: dict[str, float]) -> str:
    def share(part: float, whole: float) -> str:
        return f"{part / whole:.1%} ({part:g}/{whole:g})" if whole else "n/a"

    return "\n".join([
        f"reader {name}: {result['pages']:g} pages in {result['seconds']:.1f} s",
        f"  body F1 {result['f1']:.3f}  precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
        f"accuracy {result['accuracy']:.3f}",
        f"  date found: {share(result['dated'], result['pages'])} of pages; "
        f"{share(result['carrying_dated'], result['carrying'])} of those carrying one in markup or URL",
        f"  the URL's own date given: {share(result['url_agrees'], result['url_dated'])} of pages with a date in "
        "their URL",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_extraction", description=__doc__.split("\n")[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help="the article-extraction benchmark's folder")
    parser.add_argument("--reader", choices=sorted(READERS), default="trafilatura")
    parser.add_argument("--with-url", action="store_true", help="give the reader each page's ground-truth URL")
    args = parser.parse_args(argv)
    if not (args.path / "ground-truth.json").is_file():
        raise SystemExit(f"{args.path}: not the article-extraction benchmark (no ground-truth.json)")
    print(report(args.reader + (" (with URL)" if args.with_url else ""),
                 run(args.path, READERS[args.reader], args.with_url)))


if __name__ == "__main__":
    main()
