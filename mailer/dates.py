"""Dates and times in the reader's language, for the templates' filters (babel).

"onsdag 16 juni 2027 kl. 09:00" / "Wednesday 16 June 2027 at 09:00"; each datetime is
written in its own zone (the event's).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from babel.dates import format_date, format_datetime
from jinja2.exceptions import FilterArgumentError
from jinja2.runtime import Undefined


@dataclass(frozen=True)
class DateStyle:
    """How one language writes dates: "onsdag 16 juni 2027 kl. 09:00–12:00"."""

    locale: str
    at: str  # between a date and a time
    span_at: str  # between a date and a time range

    def date(self, value: object) -> str:
        return _format_date(_as_date(value, "date"), "EEEE d MMMM y", self.locale)

    def shortdate(self, value: object) -> str:
        return _format_date(_as_date(value, "shortdate"), "d MMMM", self.locale)

    def time(self, value: object) -> str:
        """Clock time; a string (a programme's `at = "10:00"`) is taken as already written."""
        if isinstance(value, str):
            return value
        if isinstance(value, dt.time | dt.datetime):
            return value.strftime("%H:%M")
        raise _bad_value("time", "a time or datetime", value)

    def datetime(self, value: object) -> str:
        moment = _as_date(value, "datetime")
        if not isinstance(moment, dt.datetime):
            return self.date(moment)
        return f"{self.date(moment)}{self.at}{self.time(moment)}"

    def span(self, start: object, end: object) -> str:
        """One date and a time range when both ends fall on the same local day."""
        first, last = _as_date(start, "span"), _as_date(end, "span")
        if not (isinstance(first, dt.datetime) and isinstance(last, dt.datetime)):
            raise _bad_value("span", "two datetimes", (start, end))
        if first.tzinfo and last.tzinfo:
            last = last.astimezone(first.tzinfo)
        if first.date() != last.date():
            return f"{self.datetime(first)} – {self.datetime(last)}"
        return f"{self.date(first)}{self.span_at}{self.time(first)}–{self.time(last)}"


STYLES = {"sv": DateStyle("sv_SE", " kl. ", " kl. "), "en": DateStyle("en_GB", " at ", ", ")}


def weekday_time(moment: dt.datetime, language: str) -> str:
    """A due time as `check`, `rehearse` and `status` show it, weekday first so a Saturday
    stands out (SPEC §14): "lör 2027-10-23 08:00" / "Sat 2027-10-23 08:00", in its own zone."""
    locale = STYLES.get(language.split("-")[0], STYLES["en"]).locale
    return format_datetime(moment, "EEE y-MM-dd HH:mm", tzinfo=moment.tzinfo, locale=locale)


@functools.lru_cache(maxsize=1024)
def _format_date(day: dt.date, pattern: str, locale: str) -> str:
    """Babel, remembered: every recipient of a mail gets the same few dates."""
    return format_date(day, pattern, locale=locale)


def _as_date(value: object, name: str) -> dt.date:
    """A date or datetime, also from ISO text: free event keys may be strings."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    if isinstance(value, dt.date):
        return value
    raise _bad_value(name, "a date or datetime", value)


def is_date(value: object) -> bool:
    """Whether the date filters take `value`: a date, a datetime, or ISO text of one."""
    if isinstance(value, str):
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return isinstance(value, dt.date)


def _bad_value(name: str, expected: str, value: object) -> FilterArgumentError:
    """A filter given the wrong kind of value: a template error, reported with its line."""
    return FilterArgumentError(f"{name}: expected {expected}, got {value!r}")
