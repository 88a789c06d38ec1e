"""Dates read from text and the time a question speaks of (rag/dates.py), against a fixed `as_of`."""

from datetime import date

import pytest

from rag.dates import (
    DateError,
    TimeScope,
    dateline_agency,
    dateline_date,
    iso_date,
    request_scope,
    time_scope,
    user_date,
)

AS_OF = date(2024, 5, 15)  # a Wednesday

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "expected"), [
    ("2019-11-18", "2019-11-18"), ("2019-11-18T10:00:00+09:00", "2019-11-18"), ("Nov 18, 2019", "2019-11-18"),
    ("18 November 2019", "2019-11-18"), ("November 18th, 2019", "2019-11-18"),
    ("D:20230303120000+09'00'", "2023-03-03"), ("2023/03/03", "2023-03-03"), (date(2020, 1, 2), "2020-01-02"),
    # relative words and bare numbers are not a publication date
    ("today", ""), ("2 days ago", ""), ("1678000000", ""),
    # unknown, never an error: garbage, impossible days, implausible years, nothing
    ("garbage", ""), ("2019-02-30", ""), ("3000-01-01", ""), ("1066-10-14", ""), ("", ""), (None, ""), ("x" * 500, ""),
])
def test_iso_date_reads_what_it_can_and_nothing_else(value, expected):
    assert iso_date(value) == expected


@pytest.mark.parametrize(("body", "expected"), [
    ("SEOUL, March 3, 2023 (Reuters) - South Korea's exports fell.", "2023-03-03"),
    ("Feb 7, 2021 ... Super Bowl 2021 will take place at Raymond James Stadium.", "2021-02-07"),
    ("WASHINGTON (AP) — 18 November 2019 — Lawmakers met.", "2019-11-18"),
    ("Last week, Meta Platform CEO Mark Zuckerberg visited Japan, South Korea and India.", ""),
    ("x" * 400 + " March 3, 2023", ""),  # too far in to be a dateline
    ("The May 4, 2023 meeting approved the budget.", ""),  # a date in a sentence
])
def test_dateline_date_only_at_the_start(body, expected):
    assert dateline_date(body) == expected


@pytest.mark.parametrize(("question", "since", "until", "latest"), [
    ("What is the latest revenue forecast?", None, None, True),
    ("What is the most recent figure?", None, None, True),
    ("What did the board report in March 2024?", date(2024, 3, 1), date(2024, 3, 31), False),
    ("What was the rate in 2021?", date(2021, 1, 1), date(2021, 12, 31), False),
    ("What happened on 3 March 2023?", date(2023, 3, 3), date(2023, 3, 3), False),
    ("What was reported last week?", date(2024, 5, 6), date(2024, 5, 12), False),
    ("What was reported last month?", date(2024, 4, 1), date(2024, 4, 30), False),
    ("What happened this year?", date(2024, 1, 1), AS_OF, False),
    ("What was said in the past 3 days?", date(2024, 5, 12), AS_OF, False),
    ("What was said two weeks ago?", date(2024, 4, 25), date(2024, 5, 1), False),
    ("What was said yesterday?", date(2024, 5, 14), date(2024, 5, 14), False),
    ("What was the level before March?", None, date(2024, 2, 29), False),
    ("What changed since 2021?", date(2021, 1, 1), None, False),
    ("What happened after April 2024?", date(2024, 5, 1), None, False),
    # a month without a year is the last one at or before as_of
    ("What were chip exports in June?", date(2023, 6, 1), date(2023, 6, 30), False),
    # about the future or about content, not about when articles were published: no range
    ("How much will Korea invest by 2027?", None, None, False),
    ("What is planned in 2030?", None, None, False),
    ("Super Bowl 2021 location", None, None, False),
])
def test_time_phrases_resolve_against_as_of(question, since, until, latest):
    scope = time_scope(question, AS_OF)
    assert (scope.since, scope.until, scope.latest) == (since, until, latest)
    assert scope.source == "question"


def test_a_question_range_keeps_undated_articles_a_request_range_does_not():
    asked = TimeScope(date(2024, 3, 1), date(2024, 3, 31))
    assert asked.holds("2024-03-15") and not asked.holds("2024-04-01") and asked.holds("")
    requested = request_scope("2024-03-01", "2024-03-31", TimeScope(latest=True))
    assert requested.source == "request" and requested.latest
    assert requested.holds("2024-03-31") and not requested.holds("") and not requested.holds("2024-02-29")
    assert request_scope(None, None, asked) is asked


@pytest.mark.parametrize(("since", "until", "message"), [
    ("soon", None, "since"), (None, "2024-13-45", "until"), (12, None, "since"),
    ("2024-05-01", "2024-04-01", "after until"),
])
def test_bad_request_dates_are_refused_with_the_field_named(since, until, message):
    with pytest.raises(DateError, match=message):
        request_scope(since, until, TimeScope())


def test_user_date_accepts_dates_and_iso_text():
    assert user_date("2024-05-01", "since") == date(2024, 5, 1)
    assert user_date(date(2024, 5, 1), "since") == date(2024, 5, 1)
    assert user_date("", "since") is None and user_date(None, "since") is None


@pytest.mark.parametrize(("body", "agency"), [
    ("NORRPORT, May 3, 2024 (Metro Wire) - Repairs to the bridge", "Metro Wire"),
    ("WASHINGTON (AP) — Lawmakers met on Tuesday.", "AP"),
    ("The firm (Acme) - said on Tuesday it would cut jobs.", ""),  # a sentence, not a dateline
])
def test_the_agency_of_a_dateline(body, agency):
    assert dateline_agency(body) == agency
