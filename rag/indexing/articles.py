"""A corpus's articles managed from outside (the chat page): uploads, the list of articles, deletions; each change
to the corpus folder and its index is all or nothing."""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from rag.arguments import PathArg, optional_path
from rag.errors import BadInput, NotFound, TooLarge
from rag.indexing.build import StaleIndex, build_index, current_build, current_manifest, index_folder
from rag.ingest.reading import MB, IngestError, find_articles, read_document, safe_article_name, shown_name
from rag.models.assembly import sha256_file
from rag.settings import Settings
from rag.types import ArticleInfo, IndexReport, ProgressCallback


class ArticleError(BadInput, ValueError):
    """A request to delete articles names none that the index holds, or would empty the corpus; nothing changed."""


class UnknownArticle(ArticleError, NotFound):
    """The article named is not in the index (or not a path inside the corpus); nothing changed."""

    kind = NotFound.kind


class UploadTooLarge(IngestError, TooLarge):
    """An upload is larger than `max_upload_mb` (or `max_file_mb`); it was not read."""

    kind = TooLarge.kind


UPLOAD_PREFIX = ".upload-"  # an upload being checked in the corpus folder (hidden: ingestion never sees it)
REMOVING_PREFIX = ".removing-"  # an article set aside while the index is rebuilt without it
CORPUS_LOCK = ".corpus.lock"  # in the index folder: one upload or deletion at a time per corpus
MAX_NAME_BYTES = 255

Upload = Path | tuple[Path, str]  # a file on disk, or (file on disk, the name its sender gave it)


def add_articles(files: Iterable[Upload], settings: Settings, corpus: PathArg | None = None,
                 progress: bool | ProgressCallback = False) -> IndexReport:
    """Check uploaded files, copy the good ones into the corpus, then index incrementally: all or nothing.

    An upload's name in the corpus is made by `safe_article_name` from the name its sender gave (the file's own
    name for a bare Path): nothing is ever written outside the corpus folder. Its size is checked against
    `max_upload_mb` before a byte is read; it is copied to a hidden file in the corpus and read there exactly as
    ingestion will read it (type by the new name's suffix, text, the PDF bounds); a rejected file is named in
    `report.rejected` and never becomes an article. The same bytes as an article already there is a duplicate
    (`report.duplicates`), not copied; a different file under a taken name gets a numbered suffix
    (`report.renamed` lists every name that changed). If indexing fails, the copied files are removed again: the
    corpus is as it was and the previous build stays current. `progress` as in `build_index` (the page shows each
    step of the indexing).
    """
    corpus = optional_path(corpus, "corpus") or settings.corpus_dir
    corpus.mkdir(parents=True, exist_ok=True)
    folder = index_folder(settings, corpus)
    notes = IndexReport()
    copied: list[Path] = []
    with _corpus_lock(folder):
        _recover(corpus, folder)
        before = current_build(folder)
        try:
            for upload in files:
                source, name = (Path(upload), Path(upload).name) if isinstance(upload, str | os.PathLike) else (
                    Path(upload[0]), str(upload[1]))
                try:
                    placed = _place_upload(source, name, corpus, settings, notes)
                except IngestError as exc:
                    notes.rejected.append(str(exc))
                    continue
                copied += [placed] if placed else []
            report = build_index([corpus], folder, settings, progress=progress)
        except BaseException:
            if current_build(folder) == before:  # else the new build is in: the corpus and the index agree
                for path in copied:
                    path.unlink(missing_ok=True)
            raise
    report.rejected, report.duplicates, report.renamed = notes.rejected, notes.duplicates, notes.renamed
    return report


def _place_upload(source: Path, name: str, corpus: Path, settings: Settings, notes: IndexReport) -> Path | None:
    """Check one upload and move it into the corpus under a safe, free name; None for a duplicate."""
    shown = shown_name(name)
    dest_name = safe_article_name(name)
    limit_mb = upload_limit_mb(settings)
    try:
        info = source.stat()
    except OSError as exc:
        raise IngestError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise IngestError(f"{shown}: not a regular file")

    check_upload_size(name, info.st_size, settings)
    temp = corpus / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}{Path(dest_name).suffix}"
    try:
        if _copy_bounded(source, temp, int(limit_mb * MB)) > limit_mb * MB:  # it grew after the check
            check_upload_size(name, temp.stat().st_size, settings)
        sha256 = read_document(temp, dest_name, limit_mb).sha256
        same = _same_bytes(corpus, sha256, temp.stat().st_size)
        if same:
            notes.duplicates.append(f"{shown}: the same as {same}, already in the corpus; not added again")
            return None
        dest = _free_name(corpus, dest_name)
        os.replace(temp, dest)
    except IngestError as exc:
        raise IngestError(str(exc).replace(str(temp), shown)) from None
    except OSError as exc:
        raise IngestError(f"{shown}: could not be saved in the corpus ({exc.strerror or exc})") from None
    finally:
        temp.unlink(missing_ok=True)
    if dest.name != name:
        notes.renamed.append(f"{shown} saved as {dest.name}")
    return dest


def upload_limit_mb(settings: Settings) -> float:
    """The largest upload accepted, in MB: the smaller of `max_upload_mb` and `max_file_mb`."""
    return min(settings.max_upload_mb, settings.max_file_mb)


def check_upload_size(name: str, size: int, settings: Settings) -> None:
    """UploadTooLarge when an upload of `size` bytes is over the limit (checked before a byte is read)."""
    limit_mb = upload_limit_mb(settings)
    if size > limit_mb * MB:
        setting = "max_upload_mb" if settings.max_upload_mb <= settings.max_file_mb else "max_file_mb"
        raise UploadTooLarge(f"{shown_name(name)}: {size / MB:.1f} MB is larger than the {limit_mb:g} MB limit "
                             f"(setting {setting})")


def _copy_bounded(source: Path, target: Path, limit: int) -> int:
    """Copy at most `limit` + 1 bytes of `source` into a new file `target`, synced to disk; the bytes copied."""
    copied = 0
    with open(source, "rb") as reader, open(target, "xb") as writer:
        while copied <= limit and (block := reader.read(min(1 << 20, limit + 1 - copied))):
            writer.write(block)
            copied += len(block)
        writer.flush()
        os.fsync(writer.fileno())
    return copied


def _same_bytes(corpus: Path, sha256: str, size: int) -> str | None:
    """The id of an article in the corpus with exactly these bytes (only files of the same size are hashed)."""
    for path in find_articles([corpus]):
        try:
            if path.stat().st_size == size and sha256_file(path) == sha256:
                return path.relative_to(corpus).as_posix()
        except OSError:
            continue
    return None


def _free_name(corpus: Path, name: str) -> Path:
    """`name`, or `name` with a number before its suffix, that no file (or sidecar) in the corpus has yet."""
    suffix = Path(name).suffix
    stem = name[: -len(suffix)]
    for number in range(1, 10_000):
        path = corpus / (name if number == 1 else f"{stem}-{number}{suffix}")
        if not any(p.exists() or p.is_symlink() for p in (path, path.with_name(path.name + ".meta.json"))):
            return path
    raise IngestError(f"{name}: thousands of articles already have this name")


def list_articles(settings: Settings, corpus: PathArg | None = None) -> list[ArticleInfo]:
    """The articles the current index holds, by title: id, title, date, chunk count, publication date, outlet and
    near-copies (from its manifest; an index built before dates were read gives "" and [])."""
    corpus = optional_path(corpus, "corpus") or settings.corpus_dir
    articles = [_article_info(doc_id, entry, corpus)
                for doc_id, entry in _indexed_or_none(index_folder(settings, corpus)).items()]
    return sorted(articles, key=lambda a: (a.title.casefold(), a.doc_id))


def _article_info(doc_id: str, entry: dict, corpus: Path) -> ArticleInfo:
    return ArticleInfo(doc_id, str(entry.get("title") or doc_id), _article_date(corpus / doc_id, entry),
                       int(entry.get("chunks", 0)), published=str(entry.get("published") or ""),
                       outlet=str(entry.get("outlet") or ""),
                       copies=[str(c) for c in entry.get("copies") or [] if c != doc_id])


def remove_articles(doc_ids: Iterable[str], settings: Settings, corpus: PathArg | None = None,
                    progress: bool | ProgressCallback = False) -> IndexReport:
    """Delete articles from the corpus folder and the index, incrementally (no other article is embedded again):
    all or nothing.

    Each id must name an article the current index holds, as a plain relative path inside the corpus; a request
    that would leave no article is refused too (an empty corpus cannot be indexed): ArticleError, nothing
    changed. The files (and any `<file>.meta.json`) are first renamed to hidden names beside them, so ingestion
    no longer sees them; the index is rebuilt; only then are they deleted. If the rebuild fails they are renamed
    back: the corpus is as it was and the previous build stays current. A process killed half-way is finished
    by the next upload or deletion (the hidden files go back, or away when the new build no longer holds them).
    """
    corpus = optional_path(corpus, "corpus") or settings.corpus_dir
    folder = index_folder(settings, corpus)
    moved: list[tuple[Path, Path]] = []
    with _corpus_lock(folder):
        _recover(corpus, folder)
        wanted = _checked_ids(doc_ids, _indexed_or_none(folder), corpus)
        before = current_build(folder)
        try:
            for doc_id in wanted:
                _set_aside(corpus / doc_id, moved)
            report = build_index([corpus], folder, settings, progress=progress)
        except BaseException:
            back = current_build(folder) == before  # else the new build is in: it no longer holds them
            for original, aside in reversed(moved):
                if back:
                    os.replace(aside, original)
                else:
                    aside.unlink(missing_ok=True)
            raise
        for _, aside in moved:
            aside.unlink(missing_ok=True)
    return report


def _checked_ids(doc_ids: Iterable[str], held: dict[str, dict], corpus: Path) -> list[str]:
    wanted = list(dict.fromkeys([doc_ids] if isinstance(doc_ids, str) else doc_ids))
    if not wanted:
        raise ArticleError("no article chosen to delete")
    for doc_id in wanted:
        shown = shown_name(str(doc_id))
        path = PurePosixPath(str(doc_id))
        if (not isinstance(doc_id, str) or path.is_absolute() or ".." in path.parts or "\\" in doc_id
                or "\x00" in doc_id or not (corpus / doc_id).parent.resolve().is_relative_to(corpus.resolve())):
            raise UnknownArticle(f"{shown}: not an article's path inside the corpus folder; nothing was deleted")
        if doc_id not in held:
            raise UnknownArticle(f"{shown}: no such article in the index; nothing was deleted")
    if set(held) <= set(wanted):
        raise ArticleError("an empty corpus cannot be indexed: add another article before deleting the last one; "
                           "nothing was deleted")
    return wanted


def _set_aside(path: Path, moved: list[tuple[Path, Path]]) -> None:
    """Rename an article and its sidecar to hidden names beside them (recorded in `moved` one by one)."""
    token = uuid.uuid4().hex[:8]
    for original in (path, path.with_name(path.name + ".meta.json")):
        if not (original.exists() or original.is_symlink()):
            continue
        aside = original.with_name(f"{REMOVING_PREFIX}{token}.{original.name}")
        if len(aside.name.encode("utf-8")) > MAX_NAME_BYTES:  # a long name cannot be kept in it: not recoverable
            aside = original.with_name(f"{REMOVING_PREFIX}{token}")
        os.rename(original, aside)
        moved.append((original, aside))


def _recover(corpus: Path, folder: Path) -> None:
    """Finish what a killed upload or deletion left in the corpus: a hidden upload copy is removed; an article set
    aside for deletion goes back when the current index still holds it (or there is no index), else away. Only
    names of exactly the form these functions give are touched."""
    for path in corpus.rglob(f"{UPLOAD_PREFIX}*"):
        if re.fullmatch(rf"{re.escape(UPLOAD_PREFIX)}[0-9a-f]{{32}}\.[a-z]+", path.name):
            path.unlink(missing_ok=True)
    try:
        held: set[str] | None = set(_indexed_documents(folder))
    except StaleIndex:
        held = None  # unsure: keep everything
    for aside in corpus.rglob(f"{REMOVING_PREFIX}*"):
        found = re.fullmatch(rf"{re.escape(REMOVING_PREFIX)}[0-9a-f]{{8}}\.(.+)", aside.name)
        original = aside.with_name(found.group(1)) if found else None
        if original is None or original.exists():
            continue  # not ours, its name is lost, or the name is taken again: left for a person to look at
        article = original.relative_to(corpus).as_posix().removesuffix(".meta.json")
        if held is None or article in held:
            os.replace(aside, original)
        else:
            aside.unlink(missing_ok=True)


def _indexed_documents(folder: Path) -> dict[str, dict]:
    return current_manifest(folder)[1]["documents"]


def _indexed_or_none(folder: Path) -> dict[str, dict]:
    """The indexed documents; none where nothing was indexed yet (a folder never indexed holds no article)."""
    try:
        return _indexed_documents(folder)
    except StaleIndex:
        if current_build(folder) is None:
            return {}
        raise


def _article_date(path: Path, entry: dict) -> str:
    """The publication date, else the date the file gives in its metadata, else the day the file was written."""
    date = str(entry.get("published") or (entry.get("meta") or {}).get("date") or "")
    if date:
        return date
    try:
        return time.strftime("%Y-%m-%d", time.localtime(path.stat().st_mtime))
    except OSError:
        return ""


def _corpus_lock(folder: Path):  # noqa: ANN202 - a filelock.FileLock
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / CORPUS_LOCK))
