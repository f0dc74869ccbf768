"""Send times and durations: parse them, and do their arithmetic in the event's timezone.

Pure: nothing here reads the clock; every instant is computed from the values passed in.

One DST rule, used wherever a wall-clock time gets its zone (`localize`): a time that
does not exist (spring forward, 02:30 on 2027-03-28 in Stockholm) moves forward by the
gap (03:30 CEST); a time that exists twice (fall back, 02:30 on 2027-10-31) is the first
occurrence (CEST, +02:00). An organiser who writes 02:30 on the DST night gets the mail
at the first moment the clock reads 02:30 or later: never twice, never skipped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailer.workdays import SWEDISH, DaysOff

# Units a duration may carry, as `timedelta` keywords; a bare number means seconds.
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"\s*(\d+)\s*([smhdw])\s*", re.IGNORECASE | re.ASCII)
_DURATION_EXPECTED = 'a duration like "90s", "5m", "2h", "3d" or a number of seconds'

_RELATIVE = re.compile(
    r"""\s*(?P<anchor>start|end)
        (?:\s*(?P<sign>[+-])\s*(?P<n>\d+)\s*(?P<unit>workdays?|[wdhm]))?
        (?:\s+at\s+(?P<hour>\d{1,2}):(?P<minute>\d{2}))?\s*""",
    re.IGNORECASE | re.ASCII | re.VERBOSE,
)
_RELATIVE_EXPECTED = (
    '"<start|end> <+|-> <N><w|d|h|m> [at HH:MM]" (like "start - 21d at 09:00") '
    'or "<start|end> <+|-> <N> workdays [at HH:MM]"'
)
# Any number this long overflows timedelta anyway; refusing it early keeps int() away
# from its own digit-limit error (4300 digits) and its unhelpful message.
_MAX_DIGITS = 20


def written_duration(delta: timedelta) -> str:
    """A duration as a person writes one ("5m", "1h 30m"), not as timedelta prints ("0:05:00")."""
    left = abs(int(delta.total_seconds()))
    parts = []
    for unit, size_s in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        amount, left = divmod(left, size_s)
        parts += [f"{amount}{unit}"] if amount else []
    return ("-" if delta < timedelta(0) else "") + (" ".join(parts) or "0s")


def parse_duration(value: str | int | float) -> timedelta:
    """Turn "90s", "5m", "2h", "3d", "1w" or a plain number of seconds into a timedelta."""
    amount, unit = _split_duration(value)
    try:
        if amount is not None:
            return timedelta(**{_DURATION_UNITS[unit]: amount})
    except OverflowError:
        pass
    raise ValueError(f"expected {_DURATION_EXPECTED}, got {_quote(value)}")


def _split_duration(value: object) -> tuple[int | float | None, str]:
    """The amount and unit of a duration, or (None, ...) when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value if value >= 0 else None), "s"  # `>=` is also False for NaN
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match[1]) > _MAX_DIGITS:
        return None, "s"
    return int(match[1]), match[2].lower()


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """Give a wall-clock time its zone by the module's DST rule, normalised through UTC.

    PEP 495's fold=0 reads a nonexistent time with the offset from before the gap, so the
    round trip through UTC moves it forward by the gap; an ambiguous time gets its first
    occurrence.
    """
    if naive.utcoffset() is not None:
        raise ValueError(f"expected a wall-clock time without an offset, got {naive}")
    try:
        return naive.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)
    except OverflowError as exc:
        raise ValueError(f"{naive} in {tz} is out of range") from exc


def resolve_time(
    spec: str | datetime,
    *,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    days_off: DaysOff | None = None,
) -> datetime:
    """Resolve a `send_at`/`expires` value against the event's start and end, in `tz`.

    A TOML datetime is local in `tz` when naive, that instant when it has an offset. A
    string is relative: days, weeks and working days (weekends and `days_off` skipped) move
    the calendar date in `tz` and keep (or set with `at`) the local wall-clock time; hours
    and minutes are exact durations.
    """
    if start.utcoffset() is None or end.utcoffset() is None:
        raise ValueError(f"expected the event's start and end with a timezone, got {start}, {end}")
    try:
        if isinstance(spec, datetime):
            return localize(spec, tz) if spec.utcoffset() is None else spec.astimezone(tz)
        if isinstance(spec, str):
            return _resolve_relative(spec, start=start, end=end, tz=tz, days_off=days_off)
    except OverflowError as exc:
        raise ValueError(f"{_quote(spec)} lands outside the years 1-9999") from exc
    raise ValueError(f"expected a datetime or {_RELATIVE_EXPECTED}, got {_quote(spec)}")


def _resolve_relative(
    spec: str, *, start: datetime, end: datetime, tz: ZoneInfo, days_off: DaysOff | None
) -> datetime:
    """Resolve the string form of `send_at`; OverflowError means out of the datetime range."""
    match = _RELATIVE.fullmatch(spec)
    if match is None:
        raise ValueError(f"expected {_RELATIVE_EXPECTED}, got {_quote(spec)}")
    anchor = start if match["anchor"].lower() == "start" else end
    digits, unit = match["n"] or "0", (match["unit"] or "d").lower()
    if len(digits) > _MAX_DIGITS:
        raise OverflowError(digits)
    offset = -int(digits) if match["sign"] == "-" else int(digits)
    at = _parse_at(match, spec)
    if unit in "hm":
        if at is not None:
            raise ValueError(
                f'"at" only goes with days or weeks (hours and minutes are exact), '
                f"got {_quote(spec)}"
            )
        delta = timedelta(hours=offset) if unit == "h" else timedelta(minutes=offset)
        return (anchor.astimezone(UTC) + delta).astimezone(tz)
    local = anchor.astimezone(tz)
    if offset == 0 and at is None:
        return local  # exactly the anchor, even when it is the second of an ambiguous hour
    if unit.startswith("workday"):
        day = (days_off or SWEDISH).shift(local.date(), offset)
    else:
        day = local.date() + timedelta(days=offset * 7 if unit == "w" else offset)
    return localize(datetime.combine(day, at if at is not None else local.time()), tz)


def _parse_at(match: re.Match[str], spec: str) -> time | None:
    """The `at HH:MM` wall-clock time of a relative spec, if it has one."""
    if match["hour"] is None:
        return None
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ValueError(
            f'expected "at HH:MM" with hour 0-23 and minute 00-59, '
            f'got "at {match["hour"]}:{match["minute"]}" in {_quote(spec)}'
        )
    return time(hour, minute)


def _quote(value: object) -> str:
    """Show a bad value in an error message: strings in double quotes, one line."""
    if isinstance(value, str) and value.isprintable():
        return f'"{value}"'
    return repr(value)
