"""Dates: an article's publication date read from text, and the time a question speaks of resolved in code.

The generator never works out dates: "the latest figure", "in March 2023", "last week" and "before March" become a
`TimeScope` here (a publication-date range and/or a preference for the newest report), relative to a fixed day
(`as_of`, today by default), and retrieval applies it (rag.retrieval). Free-form dates (a front matter's
"March 3, 2023", a PDF's "D:20230303...") are normalised to ISO "YYYY-MM-DD"; what cannot be read is "" (date
unknown), never an error, except for the dates a user passes as `since` / `until`, which must be valid.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from rag.errors import BadInput

EARLIEST_YEAR = 1900  # an earlier "publication date" is a parsing accident (or a history book), not news
_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
                "november", "december")  # English, whatever the process's locale
_MONTHS = {name: number for number, full in enumerate(_MONTH_NAMES, start=1) for name in (full, full[:3], full[:4])}
MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|" \
        r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_PDF_DATE = re.compile(r"D:(\d{4})(\d{2})(\d{2})")
# A dateline or snippet date at an article's start: "Feb 7, 2021 ...", "SEOUL, March 3, 2023 (Reuters) -",
# "18 November 2019 -", "2019-11-18".
_DATELINE = re.compile(rf"\b(?:(?P<m1>{MONTH})\s+(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y1>\d{{4}})|"
                       rf"(?P<d2>\d{{1,2}})\s+(?P<m2>{MONTH})\s+(?P<y2>\d{{4}})|"
                       r"(?P<y3>\d{4})-(?P<m3>\d{2})-(?P<d3>\d{2}))\b", re.IGNORECASE)
DATELINE_CHARS = 160  # how far into an article's body a dateline may start
_DATELINE_LEAD = re.compile(r"[A-Z\W]*")  # "SEOUL, ", "WASHINGTON (AP) — ": capitals, spaces and punctuation
_AGENCY = re.compile(r"\(([A-Z][A-Za-z .&'-]{1,40})\)\s*[-\u2013\u2014]")  # "(Reuters) -", "(AP) —"


class DateError(BadInput, ValueError):
    """A date given by the user (since, until, as_of) cannot be read."""


# ---------------------------------------------------------------- reading dates


def iso_date(value: Any) -> str:
    """A date-like value as ISO "YYYY-MM-DD", or "" when it cannot be read or is implausible (before
    EARLIEST_YEAR, or more than a year in the future)."""
    if isinstance(value, datetime):
        return _plausible(value.date())
    if isinstance(value, date):
        return _plausible(value)
    text = str(value or "").strip()
    if not text or len(text) > 100:
        return ""
    for pattern in (_ISO, _PDF_DATE):
        found = pattern.match(text)
        if found:
            return _plausible(_day(*map(int, found.groups())))
    found = _DATELINE.search(text)
    if found and found.start() == 0:
        return _plausible(_dateline_day(found))
    return _plausible(_dateparser_day(text))


def dateline_date(body: str) -> str:
    """The date of a dateline at the start of an article's body ("SEOUL, March 3, 2023 (Reuters) -",
    "Feb 7, 2021 ..."), or "". Only capitals and punctuation may come before the date (a place, an agency): "The
    May 4, 2023 meeting ..." is a date in a sentence, not a dateline."""
    found = _DATELINE.search(body[:DATELINE_CHARS + 40])
    if not found or found.start() > DATELINE_CHARS or not _DATELINE_LEAD.fullmatch(body[:found.start()]):
        return ""
    return _plausible(_dateline_day(found))


def dateline_agency(body: str) -> str:
    """Who filed the story, from a dateline's parentheses ("SEOUL, March 3, 2023 (Reuters) -" gives "Reuters"),
    or ""."""
    found = _AGENCY.search(body[:DATELINE_CHARS + 60])
    if not found or not (_DATELINE_LEAD.fullmatch(body[:found.start()]) or dateline_date(body[:found.start()])):
        return ""
    return found.group(1).strip()


def _dateline_day(found: re.Match[str]) -> date | None:
    groups = found.groupdict()
    for n in "123":
        if groups[f"y{n}"]:
            month = groups[f"m{n}"]
            month_number = int(month) if month.isdigit() else _month_number(month)
            return _day(int(groups[f"y{n}"]), month_number or 0, int(groups[f"d{n}"]))
    return None


def _month_number(name: str) -> int:
    """1-12 for an English month name or abbreviation ("Sept.", "sep", "September"), 0 for anything else."""
    lowered = name.lower().rstrip(".")
    return _MONTHS.get(lowered[:4]) or _MONTHS.get(lowered[:3]) or 0


def _day(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _dateparser_day(text: str) -> date | None:
    import dateparser

    try:
        # Absolute dates only: "today" or "2 days ago" in a front matter would date the article by the day it was
        # read, and a bare number is no date.
        parsed = dateparser.parse(text, languages=["en"], settings={
            "STRICT_PARSING": True, "RETURN_AS_TIMEZONE_AWARE": False,
            "PARSERS": ["custom-formats", "absolute-time"]})
    except Exception:  # dateparser raises several types on odd input; an unreadable date is unknown
        return None
    return parsed.date() if parsed else None


def _plausible(day: date | None) -> str:
    if day is None or day.year < EARLIEST_YEAR or day > date.today() + timedelta(days=366):
        return ""
    return day.isoformat()


def user_date(value: Any, what: str) -> date | None:
    """A date the user passes (`since`, `until`, `as_of`): None when absent, DateError when it cannot be read."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise DateError(f"{what} must be a date such as 2023-03-01, not {type(value).__name__}")
    text = iso_date(value)
    if not text:
        raise DateError(f"{what}: {value[:40]!r} is not a date this can read; use YYYY-MM-DD, e.g. 2023-03-01")
    return date.fromisoformat(text)


# ---------------------------------------------------------------- the time a question speaks of


@dataclass(frozen=True)
class TimeScope:
    """Publication dates to keep (`since`..`until`, either open) and whether the newest report is wanted.

    `source` is "question" (resolved from its words: articles of unknown date stay in, and when no article in the
    range is relevant the range is dropped) or "request" (given as since/until: strict)."""

    since: date | None = None
    until: date | None = None
    latest: bool = False
    phrase: str = ""
    source: str = "question"

    @property
    def ranged(self) -> bool:
        return self.since is not None or self.until is not None

    def holds(self, published: str) -> bool:
        """Whether an article published on `published` (ISO or "") is in the range."""
        if not self.ranged:
            return True
        if not published:
            return self.source == "question"
        day = date.fromisoformat(published)
        return (self.since is None or day >= self.since) and (self.until is None or day <= self.until)

    def to_dict(self, applied: bool = True) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "latest": self.latest, "phrase": self.phrase, "source": self.source, "applied": applied}


_LATEST = re.compile(r"\b(latest|most recent(?:ly)?|newest|current(?:ly)?|now|nowadays|today'?s|as of today|"
                     r"so far|to date|up to date|recent(?:ly)?|still|updated?)\b", re.IGNORECASE)
_UNIT = r"(day|week|month|year)s?"
_RELATIVE = re.compile(rf"\b(?:(?P<which>last|past|previous|this)\s+(?:(?P<n>\d+|two|three|four|five|six)\s+)?"
                       rf"(?P<unit>{_UNIT})|(?P<n2>\d+|a|one|two|three|four|five|six)\s+(?P<unit2>{_UNIT})\s+ago|"
                       r"(?P<day>yesterday|today))\b", re.IGNORECASE)
_SPAN = (rf"(?:(?P<d>\d{{1,2}})\s+)?(?P<month>{MONTH})(?:\s+(?P<d_after>\d{{1,2}})(?:st|nd|rd|th)?)?"
         r"(?:,?\s+(?P<year>\d{4}))?|(?P<year_only>(?:19|20)\d{2})")
_OPERATOR = re.compile(rf"\b(?P<op>in|during|on|before|prior to|until|till|through|after|since|from)\s+"
                       rf"(?:early\s+|late\s+|mid-?\s*)?(?:{_SPAN})\b", re.IGNORECASE)
_NUMBERS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def time_scope(question: str, as_of: date) -> TimeScope:
    """The publication dates a question asks about, relative to `as_of`. A range wholly after `as_of` is about
    the future ("investment by 2027", "in 2030"), not about when articles were published, and is ignored."""
    latest = bool(_LATEST.search(question))
    for found in _OPERATOR.finditer(question):
        span = _span(found, as_of)
        if span is None:
            continue
        since, until = _apply(found.group("op").lower(), *span)
        if since is not None and since > as_of:
            continue
        return TimeScope(since, min(until, as_of) if until else None, latest, found.group(0))
    found = _RELATIVE.search(question)
    if found:
        since, until = _relative(found, as_of)
        return TimeScope(since, until, latest, found.group(0))
    return TimeScope(latest=latest, phrase=_LATEST.search(question).group(0) if latest else "")


def without_time_words(question: str) -> str:
    """The question without its words about recency ("latest", "most recent", "last week"); a date it names ("in
    2021") stays: it is part of what is asked ("the CEO in 2021")."""
    for pattern in (_RELATIVE, _LATEST):
        question = pattern.sub(" ", question)
    return re.sub(r"\s+", " ", question).strip()


def _span(found: re.Match[str], as_of: date) -> tuple[date, date] | None:
    """The first and last day a date expression names: a year, a month (of the year given, else the last one
    at or before `as_of`), or a day."""
    if found.group("year_only"):
        year = int(found.group("year_only"))
        return date(year, 1, 1), date(year, 12, 31)
    month = _month_number(found.group("month"))
    if not month:
        return None
    year = int(found.group("year")) if found.group("year") else (as_of.year if month <= as_of.month
                                                               else as_of.year - 1)
    day_text = found.group("d") or found.group("d_after")
    if day_text:
        day = _day(year, month, int(day_text))
        return (day, day) if day else None
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def _apply(op: str, first: date, last: date) -> tuple[date | None, date | None]:
    if op in ("before", "prior to"):
        return None, first - timedelta(days=1)
    if op in ("until", "till", "through"):
        return None, last
    if op == "after":
        return last + timedelta(days=1), None
    if op in ("since", "from"):
        return first, None
    return first, last  # in, during, on, of


def _relative(found: re.Match[str], as_of: date) -> tuple[date, date]:
    if found.group("day"):
        day = as_of - timedelta(days=1) if found.group("day").lower() == "yesterday" else as_of
        return day, day
    unit = (found.group("unit") or found.group("unit2")).lower().rstrip("s")
    count_text = (found.group("n") or found.group("n2") or "1").lower()
    count = int(count_text) if count_text.isdigit() else _NUMBERS.get(count_text, 1)
    which = (found.group("which") or "").lower()
    if which == "this":
        return _unit_start(as_of, unit), as_of
    if which in ("last", "previous") and not found.group("n") and unit != "day":
        start = _unit_start(as_of, unit)  # the calendar week, month or year before this one
        previous_start = _shift(start, unit, -1)
        return previous_start, start - timedelta(days=1)
    if found.group("unit2"):  # "two weeks ago": that week, month or year
        start = _shift(as_of, unit, -count)
        return start - _length(unit) + timedelta(days=1), start
    return _shift(as_of, unit, -count), as_of  # "the past 3 days", "last 2 weeks"


def _unit_start(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "year":
        return day.replace(month=1, day=1)
    return day


def _shift(day: date, unit: str, count: int) -> date:
    if unit in ("day", "week"):
        return day + timedelta(days=count * (7 if unit == "week" else 1))
    months = day.month - 1 + count * (12 if unit == "year" else 1)
    year, month = day.year + months // 12, months % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _length(unit: str) -> timedelta:
    return timedelta(days={"day": 1, "week": 7, "month": 30, "year": 365}[unit])


def request_scope(since: Any, until: Any, question_scope: TimeScope) -> TimeScope:
    """The scope an answer uses: explicit `since` / `until` (strict) replace a range read from the question; the
    question's preference for the newest report stays."""
    first, last = user_date(since, "since"), user_date(until, "until")
    if first is None and last is None:
        return question_scope
    if first and last and first > last:
        raise DateError(f"since ({first}) is after until ({last}): no article can be in that range")
    return TimeScope(first, last, question_scope.latest, question_scope.phrase, "request")


def as_of_date(setting: str) -> date:
    """The day relative phrases count from: the `as_of` setting, or today."""
    return user_date(setting, "as_of") or date.today()


# ---------------------------------------------------------------- saying it


UNKNOWN_DATE = "date unknown"


def spoken_date(published: str) -> str:
    """An ISO date as an article would write it: "2024-02-14" -> "February 14, 2024" ("" stays "")."""
    if not published:
        return ""
    day = date.fromisoformat(published)
    return f"{_MONTH_NAMES[day.month - 1].capitalize()} {day.day}, {day.year}"


def outlet_and_date(outlet: str, published: str) -> str:
    """"Outlet, 2024-05-02" as sources show it, "date unknown" in place of a missing date."""
    return ", ".join(part for part in (outlet, published or UNKNOWN_DATE) if part)


def describe_scope(dates: dict[str, Any]) -> str:
    """An answer's `dates` (TimeScope.to_dict) as one short phrase for people; "" when none was used."""
    since, until = dates.get("since"), dates.get("until")
    span = (f"published {since} to {until}" if since and until else f"published on or after {since}" if since
            else f"published on or before {until}" if until else "")
    if span and not dates.get("applied", True):
        span = f"no relevant article {span.removeprefix('published ')}, so every date was searched"
    parts = [span] if span else []
    if dates.get("latest"):
        parts.append("newest reports first")
    if dates.get("source") == "question" and dates.get("phrase"):
        parts.append(f"read from “{dates['phrase']}” in the question")
    return "; ".join(parts)
