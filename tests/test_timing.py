"""Tests for mailer.timing: durations, the DST rule, and send_at resolution in Stockholm 2027.

In 2027 Stockholm springs forward on 2027-03-28 (02:00 CET -> 03:00 CEST) and falls back on
2027-10-31 (03:00 CEST -> 02:00 CET).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.timing import localize, parse_duration, resolve_time

STHLM = ZoneInfo("Europe/Stockholm")
CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))
MINUS_5 = timezone(timedelta(hours=-5))


def sthlm(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=STHLM, fold=fold)


def cet(*args: int) -> datetime:
    return datetime(*args, tzinfo=CET)


def cest(*args: int) -> datetime:
    return datetime(*args, tzinfo=CEST)


def assert_local(result: datetime, expected: datetime) -> None:
    """Same instant, same wall clock and same offset, and in Stockholm's zone."""
    assert result.tzinfo is STHLM
    # an ambiguous local time never equals another zone's datetime (PEP 495), so go via UTC
    assert result.astimezone(UTC) == expected.astimezone(UTC)
    assert result.replace(tzinfo=None) == expected.replace(tzinfo=None, fold=0)
    assert result.utcoffset() == expected.utcoffset()


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    "value,expected",
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(days=7)),
        ("0s", timedelta(0)),
        ("2H", timedelta(hours=2)),
        (" 10 M ", timedelta(minutes=10)),
        ("007d", timedelta(days=7)),
        (90, timedelta(seconds=90)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        (0.0, timedelta(0)),
    ],
)
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value,got",
    [
        ("abc", '"abc"'),
        ("", '""'),
        ("5", '"5"'),  # a number of seconds is a number, not a string
        ("-5m", '"-5m"'),
        ("5x", '"5x"'),
        ("1.5h", '"1.5h"'),
        ("h", '"h"'),
        ("5 m s", '"5 m s"'),
        ("٣s", '"٣s"'),  # Arabic-Indic digit: only ASCII digits count
        ("5m\x00", "'5m\\x00'"),
        ("99999999999999999999w", '"99999999999999999999w"'),  # overflows timedelta
        ("9" * 5000 + "s", '"' + "9" * 5000 + 's"'),  # beyond int()'s digit limit
        (True, "True"),
        (False, "False"),
        (-1, "-1"),
        (-0.5, "-0.5"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (10**30, str(10**30)),
        (None, "None"),
        ([5], "[5]"),
    ],
)
def test_parse_duration_invalid(value, got):
    expected = 'expected a duration like "90s", "5m", "2h", "3d" or a number of seconds, got '
    with pytest.raises(ValueError) as exc_info:
        parse_duration(value)
    assert str(exc_info.value) == expected + got


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_duration_any_input(value):
    try:
        result = parse_duration(value)
    except ValueError:
        return
    assert isinstance(result, timedelta) and result >= timedelta(0)


# ---------------------------------------------------------------- localize


@pytest.mark.parametrize(
    "naive,expected",
    [
        (datetime(2027, 1, 15, 9, 0), cet(2027, 1, 15, 9, 0)),
        (datetime(2027, 6, 16, 9, 0), cest(2027, 6, 16, 9, 0)),
        # spring forward: 02:00-02:59 does not exist and moves forward by the hour gap
        (datetime(2027, 3, 28, 1, 59), cet(2027, 3, 28, 1, 59)),
        (datetime(2027, 3, 28, 2, 0), cest(2027, 3, 28, 3, 0)),
        (datetime(2027, 3, 28, 2, 30), cest(2027, 3, 28, 3, 30)),
        (datetime(2027, 3, 28, 2, 59, 59), cest(2027, 3, 28, 3, 59, 59)),
        (datetime(2027, 3, 28, 3, 0), cest(2027, 3, 28, 3, 0)),
        # fall back: 02:00-02:59 happens twice and takes the first (CEST) occurrence
        (datetime(2027, 10, 31, 1, 59), cest(2027, 10, 31, 1, 59)),
        (datetime(2027, 10, 31, 2, 0), cest(2027, 10, 31, 2, 0)),
        (datetime(2027, 10, 31, 2, 30), cest(2027, 10, 31, 2, 30)),
        (datetime(2027, 10, 31, 2, 30, fold=1), cest(2027, 10, 31, 2, 30)),
        (datetime(2027, 10, 31, 3, 0), cet(2027, 10, 31, 3, 0)),
    ],
)
def test_localize(naive, expected):
    assert_local(localize(naive, STHLM), expected)


@pytest.mark.parametrize(
    "naive,utc",
    [
        (datetime(2027, 3, 28, 2, 30), datetime(2027, 3, 28, 1, 30, tzinfo=UTC)),
        (datetime(2027, 10, 31, 2, 30), datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),
    ],
)
def test_localize_instant(naive, utc):
    assert localize(naive, STHLM).astimezone(UTC) == utc


@pytest.mark.parametrize(
    "naive,message",
    [
        (datetime(2027, 6, 16, 9, 0, tzinfo=UTC), "expected a wall-clock time without an offset"),
        (datetime.min, "0001-01-01 00:00:00 in Europe/Stockholm is out of range"),
    ],
)
def test_localize_invalid(naive, message):
    with pytest.raises(ValueError, match=message):
        localize(naive, STHLM)


@given(st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2100, 1, 1)))
def test_localize_never_earlier_never_skipped(naive):
    """The mail goes at the first moment that reads `naive` or later, within the DST gap."""
    wall = localize(naive, STHLM).replace(tzinfo=None)
    assert naive <= wall <= naive + timedelta(hours=1)


# ---------------------------------------------------------------- resolve_time

JUNE_START, JUNE_END = sthlm(2027, 6, 16, 9, 0), sthlm(2027, 6, 16, 12, 0)
APRIL_START, APRIL_END = sthlm(2027, 4, 1, 9, 0), sthlm(2027, 4, 1, 12, 0)  # CEST
MARCH_START, MARCH_END = sthlm(2027, 3, 25, 9, 0), sthlm(2027, 3, 25, 12, 0)  # CET
NOV_START, NOV_END = sthlm(2027, 11, 2, 9, 0), sthlm(2027, 11, 2, 12, 0)  # CET


@pytest.mark.parametrize(
    "spec,start,end,expected",
    [
        # TOML datetimes: naive is local wall-clock time, aware is that instant
        (datetime(2027, 6, 1, 9, 0), JUNE_START, JUNE_END, cest(2027, 6, 1, 9, 0)),
        (datetime(2027, 3, 11, 9, 0), JUNE_START, JUNE_END, cet(2027, 3, 11, 9, 0)),
        (datetime(2027, 3, 28, 2, 30), JUNE_START, JUNE_END, cest(2027, 3, 28, 3, 30)),
        (datetime(2027, 10, 31, 2, 30), JUNE_START, JUNE_END, cest(2027, 10, 31, 2, 30)),
        (datetime(2027, 3, 11, 8, 0, tzinfo=UTC), JUNE_START, JUNE_END, cet(2027, 3, 11, 9, 0)),
        (datetime(2027, 6, 1, 3, 0, tzinfo=MINUS_5), JUNE_START, JUNE_END, cest(2027, 6, 1, 10, 0)),
        # the SPEC's examples
        ("start - 21d at 09:00", JUNE_START, JUNE_END, cest(2027, 5, 26, 9, 0)),
        ("start - 5d at 08:00", JUNE_START, JUNE_END, cest(2027, 6, 11, 8, 0)),
        ("end + 2d at 10:00", JUNE_START, JUNE_END, cest(2027, 6, 18, 10, 0)),
        # spacing and case are free
        ("start-21d at 9:00", JUNE_START, JUNE_END, cest(2027, 5, 26, 9, 0)),
        ("  START  -  21D  AT  09:00  ", JUNE_START, JUNE_END, cest(2027, 5, 26, 9, 0)),
        ("End+2d At 0:05", JUNE_START, JUNE_END, cest(2027, 6, 18, 0, 5)),
        # bare anchors, and `at` on the anchor's own local date
        ("start", JUNE_START, JUNE_END, JUNE_START),
        ("end", JUNE_START, JUNE_END, JUNE_END),
        ("start at 08:00", JUNE_START, JUNE_END, cest(2027, 6, 16, 8, 0)),
        ("start at 00:00", JUNE_START, JUNE_END, cest(2027, 6, 16, 0, 0)),
        ("end at 23:59", JUNE_START, JUNE_END, cest(2027, 6, 16, 23, 59)),
        ("start + 0d", JUNE_START, JUNE_END, JUNE_START),
        # weeks are 7 calendar days
        ("start - 1w", JUNE_START, JUNE_END, cest(2027, 6, 9, 9, 0)),
        ("start - 3w at 18:30", JUNE_START, JUNE_END, cest(2027, 5, 26, 18, 30)),
        ("end + 2w", JUNE_START, JUNE_END, cest(2027, 6, 30, 12, 0)),
        # days move the calendar date across DST: 09:00 stays 09:00, the offset changes
        ("start - 7d at 09:00", APRIL_START, APRIL_END, cet(2027, 3, 25, 9, 0)),
        ("start - 7d", APRIL_START, APRIL_END, cet(2027, 3, 25, 9, 0)),
        ("start - 1w", APRIL_START, APRIL_END, cet(2027, 3, 25, 9, 0)),
        ("start + 7d at 09:00", MARCH_START, MARCH_END, cest(2027, 4, 1, 9, 0)),
        ("end + 7d", MARCH_START, MARCH_END, cest(2027, 4, 1, 12, 0)),
        ("start - 7d at 09:00", NOV_START, NOV_END, cest(2027, 10, 26, 9, 0)),
        ("start - 7d", NOV_START, NOV_END, cest(2027, 10, 26, 9, 0)),
        # days landing on the DST nights follow the rule of localize()
        ("start - 7d", sthlm(2027, 4, 4, 2, 30), JUNE_END, cest(2027, 3, 28, 3, 30)),
        ("start - 7d", sthlm(2027, 11, 7, 2, 30), NOV_END, cest(2027, 10, 31, 2, 30)),
        ("start - 3d at 02:30", sthlm(2027, 3, 31, 9), JUNE_END, cest(2027, 3, 28, 3, 30)),
        # hours and minutes are exact: 2h before 04:00 CEST on 2027-03-28 reads 01:00 CET
        ("start - 2h", sthlm(2027, 3, 28, 4, 0), JUNE_END, cet(2027, 3, 28, 1, 0)),
        ("start - 30m", sthlm(2027, 3, 28, 3, 10), JUNE_END, cet(2027, 3, 28, 1, 40)),
        ("start + 90m", sthlm(2027, 3, 28, 1, 30), JUNE_END, cest(2027, 3, 28, 4, 0)),
        ("start - 2h", JUNE_START, JUNE_END, cest(2027, 6, 16, 7, 0)),
        ("end + 48h", JUNE_START, JUNE_END, cest(2027, 6, 18, 12, 0)),
        # ... and may land on the second 02:30 of the fall-back night
        ("end + 2h", JUNE_START, sthlm(2027, 10, 31, 1, 30), cet(2027, 10, 31, 2, 30)),
        ("end", JUNE_START, sthlm(2027, 10, 31, 2, 30, fold=1), cet(2027, 10, 31, 2, 30)),
        # the anchor's date is its date in the event's zone, not in the zone it came in
        (
            "start at 08:00",
            datetime(2027, 6, 15, 23, 30, tzinfo=UTC),
            JUNE_END,
            cest(2027, 6, 16, 8, 0),
        ),
        ("start", datetime(2027, 6, 16, 7, 0, tzinfo=UTC), JUNE_END, JUNE_START),
    ],
)
def test_resolve_time(spec, start, end, expected):
    assert_local(resolve_time(spec, start=start, end=end, tz=STHLM), expected)


@pytest.mark.parametrize(
    "spec,start,exact",
    [
        ("start - 2h", sthlm(2027, 3, 28, 4, 0), timedelta(hours=-2)),  # spring forward
        ("start - 2h", sthlm(2027, 10, 31, 4, 0), timedelta(hours=-2)),  # fall back
        ("start + 3h", sthlm(2027, 10, 31, 1, 0), timedelta(hours=3)),
        ("start - 45m", sthlm(2027, 3, 28, 3, 15), timedelta(minutes=-45)),
        ("start - 1d", sthlm(2027, 3, 28, 9, 0), timedelta(hours=-23)),  # a calendar day
        ("start - 1d", sthlm(2027, 10, 31, 9, 0), timedelta(hours=-25)),
    ],
)
def test_resolve_time_elapsed(spec, start, exact):
    result = resolve_time(spec, start=start, end=start, tz=STHLM)
    assert result.astimezone(UTC) - start.astimezone(UTC) == exact


HOURS = st.integers(0, 99)  # past 23 and 59 on purpose
GRAMMAR = (
    '"<start|end> <+|-> <N><w|d|h|m> [at HH:MM]" (like "start - 21d at 09:00") '
    'or "<start|end> <+|-> <N> workdays [at HH:MM]"'
)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("start - 21x", f'expected {GRAMMAR}, got "start - 21x"'),
        ("", f'expected {GRAMMAR}, got ""'),
        ("begin - 1d", f'expected {GRAMMAR}, got "begin - 1d"'),
        ("start 21d", f'expected {GRAMMAR}, got "start 21d"'),
        ("start - d", f'expected {GRAMMAR}, got "start - d"'),
        ("start - -1d", f'expected {GRAMMAR}, got "start - -1d"'),
        ("start - 1.5d", f'expected {GRAMMAR}, got "start - 1.5d"'),
        ("start - 21s", f'expected {GRAMMAR}, got "start - 21s"'),
        ("start - 21d at 9", f'expected {GRAMMAR}, got "start - 21d at 9"'),
        ("start at 09:00:00", f'expected {GRAMMAR}, got "start at 09:00:00"'),
        ("startat 09:00", f'expected {GRAMMAR}, got "startat 09:00"'),
        ("start - 21d 09:00", f'expected {GRAMMAR}, got "start - 21d 09:00"'),
        ("start\n- 1d\x00", f"expected {GRAMMAR}, got 'start\\n- 1d\\x00'"),
        ("2027-06-01T09:00", f'expected {GRAMMAR}, got "2027-06-01T09:00"'),
        (
            "start - 2h at 09:00",
            '"at" only goes with days or weeks (hours and minutes are exact), '
            'got "start - 2h at 09:00"',
        ),
        (
            "end + 30m at 10:00",
            '"at" only goes with days or weeks (hours and minutes are exact), '
            'got "end + 30m at 10:00"',
        ),
        (
            "start at 25:00",
            'expected "at HH:MM" with hour 0-23 and minute 00-59, got "at 25:00" '
            'in "start at 25:00"',
        ),
        (
            "start - 1d at 09:60",
            'expected "at HH:MM" with hour 0-23 and minute 00-59, got "at 09:60" '
            'in "start - 1d at 09:60"',
        ),
        ("start + 1000000000d", '"start + 1000000000d" lands outside the years 1-9999'),
        ("start - 3000000d", '"start - 3000000d" lands outside the years 1-9999'),
        ("start + 999999999w", '"start + 999999999w" lands outside the years 1-9999'),
        ("end + 99999999999h", '"end + 99999999999h" lands outside the years 1-9999'),
        ("end + 9999999999999999999999m", '"end + 9999999999999999999999m" lands outside'),
        ("start + " + "9" * 5000 + "d", "lands outside the years 1-9999"),
        (datetime.min, "0001-01-01 00:00:00 in Europe/Stockholm is out of range"),
        (datetime.max.replace(tzinfo=UTC), "lands outside the years 1-9999"),
        (date(2027, 6, 1), f"expected a datetime or {GRAMMAR}, got datetime.date(2027, 6, 1)"),
        (time(9, 0), f"expected a datetime or {GRAMMAR}, got datetime.time(9, 0)"),
        (21, f"expected a datetime or {GRAMMAR}, got 21"),
        (None, f"expected a datetime or {GRAMMAR}, got None"),
    ],
)
def test_resolve_time_invalid(spec, message):
    with pytest.raises(ValueError) as exc_info:
        resolve_time(spec, start=JUNE_START, end=JUNE_END, tz=STHLM)
    assert message in str(exc_info.value)


def test_resolve_time_needs_aware_event_times():
    with pytest.raises(ValueError, match="start and end with a timezone"):
        resolve_time("start", start=datetime(2027, 6, 16, 9), end=JUNE_END, tz=STHLM)


def assert_aware_or_value_error(spec: object) -> None:
    try:
        result = resolve_time(spec, start=JUNE_START, end=JUNE_END, tz=STHLM)
    except ValueError:
        return
    assert result.tzinfo is STHLM and result.utcoffset() is not None


@given(st.text())
def test_resolve_time_any_text(spec):
    assert_aware_or_value_error(spec)


@given(
    st.builds(
        "{}{}{}{}{}{}".format,
        st.sampled_from(["start", "END", " end"]),
        st.sampled_from(["", " ", " - ", "+", "-"]),
        st.one_of(st.just(""), st.integers(0, 10**25).map(str)),
        st.sampled_from(["", "w", "d", "H", "m", "s", " d"]),
        st.sampled_from(["", " at ", " AT", "at "]),
        st.one_of(st.just(""), st.builds("{}:{:02}".format, HOURS, HOURS)),
    )
)
def test_resolve_time_near_grammar(spec):
    assert_aware_or_value_error(spec)


@given(st.datetimes(timezones=st.sampled_from([None, UTC, MINUS_5, STHLM, ZoneInfo("Asia/Tokyo")])))
def test_resolve_time_any_datetime(spec):
    assert_aware_or_value_error(spec)
