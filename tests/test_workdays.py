"""Working days (SPEC §14): weekends and the country's public and de facto holidays skipped,
also across a DST change, as `send_at`/`expires` resolve them (mailer.workdays, mailer.timing).

2027 in Sweden: långfredag 26 March, annandag påsk 29 March, clocks forward 28 March;
midsommarafton Friday 25 June; clocks back 31 October; julafton Friday 24 December.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mailer.timing import resolve_time
from mailer.workdays import SWEDISH, DaysOff

STHLM = ZoneInfo("Europe/Stockholm")
CET, CEST = timezone(timedelta(hours=1)), timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    "day,is_off,name",
    [
        (date(2027, 3, 26), True, "Långfredagen"),
        (date(2027, 3, 29), True, "Annandag påsk"),
        (date(2027, 6, 25), True, "Midsommarafton"),  # de facto: employers give it off
        (date(2027, 12, 24), True, "Julafton"),
        (date(2027, 12, 31), True, "Nyårsafton"),
        (date(2027, 3, 27), True, None),  # a Saturday, no holiday
        (date(2027, 3, 25), False, None),  # skärtorsdag is a working day
        (date(2027, 6, 24), False, None),
    ],
)
def test_swedish_days_off(day: date, is_off: bool, name: str | None):
    assert SWEDISH.is_day_off(day) is is_off
    assert SWEDISH.name_of(day) == name


def test_another_country_and_english_names():
    norway = DaysOff("NO", "en")
    assert norway.is_day_off(date(2027, 5, 17)) and not SWEDISH.is_day_off(date(2027, 5, 17))
    assert DaysOff("SE", "en").name_of(date(2027, 6, 25)) == "Midsummer Eve"


@pytest.mark.parametrize(
    "spec,starts,expected",
    [
        # Easter: back over annandag påsk, the weekend, långfredag; and over the DST change.
        ("start - 1 workdays at 08:00", (2027, 3, 30, 9), datetime(2027, 3, 25, 8, tzinfo=CET)),
        ("start - 2 workdays at 08:00", (2027, 3, 30, 9), datetime(2027, 3, 24, 8, tzinfo=CET)),
        ("start + 1 workday", (2027, 3, 25, 9), datetime(2027, 3, 30, 9, tzinfo=CEST)),
        # Midsummer: midsommarafton is a day off, so is the weekend after it.
        ("start - 1 workdays at 10:00", (2027, 6, 28, 9), datetime(2027, 6, 24, 10, tzinfo=CEST)),
        ("end + 1 workdays at 10:00", (2027, 6, 24, 9), datetime(2027, 6, 28, 10, tzinfo=CEST)),
        # Autumn DST (31 October): the local time stays, the offset follows the date.
        ("start - 1 workdays", (2027, 11, 1, 10), datetime(2027, 10, 29, 10, tzinfo=CEST)),
        # Christmas: julafton and the two days after it.
        ("start - 1 workdays at 09:00", (2027, 12, 27, 9), datetime(2027, 12, 23, 9, tzinfo=CET)),
        ("start - 0 workdays at 07:00", (2027, 6, 26, 9), datetime(2027, 6, 26, 7, tzinfo=CEST)),
        ("start-3workdays", (2027, 6, 16, 9), datetime(2027, 6, 11, 9, tzinfo=CEST)),
    ],
)
def test_workdays_in_send_at(spec: str, starts: tuple[int, ...], expected: datetime):
    start = datetime(*starts, tzinfo=STHLM)
    got = resolve_time(spec, start=start, end=start + timedelta(hours=3), tz=STHLM)
    assert got.astimezone(UTC) == expected.astimezone(UTC)
    assert got.utcoffset() == expected.utcoffset() and got.tzinfo is STHLM


def test_workdays_follow_the_country_given():
    start = datetime(2027, 5, 18, 9, tzinfo=STHLM)  # a Tuesday; 17 May is Norway's day
    end = start + timedelta(hours=1)
    norway = resolve_time(
        "start - 1 workdays", start=start, end=end, tz=STHLM, days_off=DaysOff("NO")
    )
    sweden = resolve_time("start - 1 workdays", start=start, end=end, tz=STHLM)
    assert (norway.date(), sweden.date()) == (date(2027, 5, 14), date(2027, 5, 17))


@pytest.mark.parametrize(
    "spec,said",
    [
        ("start - 300 workdays", "at most 260 working days, got 300"),
        ("start - 2 workdays at 25:00", "hour 0-23"),
        ("start - 2 workweeks", '"<start|end> <+|-> <N> workdays [at HH:MM]"'),
    ],
)
def test_bad_workdays_say_what_was_expected(spec: str, said: str):
    start = datetime(2027, 6, 16, 9, tzinfo=STHLM)
    with pytest.raises(ValueError, match=None) as caught:
        resolve_time(spec, start=start, end=start, tz=STHLM)
    assert said in str(caught.value)
