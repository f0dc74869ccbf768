"""Working days and days off (SPEC §14): weekends and the public holidays of one country, from
the `holidays` library, not a hand-written list (pure: a date in, an answer out).

Days off are the country's public holidays and, where the library knows them, its de facto
ones: in Sweden midsommarafton, julafton and nyårsafton are not public holidays by law, but
employers give them off, and a report sent to an office that day is read after the weekend
(docs/decisions.md).

The library is imported when a date or a country is first asked about, not with this module:
its import takes 40-60 ms (calendars, package metadata), and every command that reads
config.toml imports this module, `mailer status` polled by scripts among them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from holidays import HolidayBase

# Categories counted as days off, where the country has them.
DAYS_OFF_CATEGORIES = ("public", "de_facto")
# How far a count of working days may reach: a year of them is more than any mail needs,
# and the loop below stays bounded whatever a file says.
MAX_WORKDAYS = 260


def is_country(code: object) -> bool:
    """Whether the `holidays` library knows this country code ("SE", "NO", "FI").

    Read from the library's registry of names: `list_supported_countries` imports every
    country's module to list its subdivisions, ~0.1 s on each load of config.toml.
    """
    return isinstance(code, str) and code in _country_codes()


@functools.cache
def _country_codes() -> frozenset[str]:
    from holidays.registry import EntityLoader  # imported when asked: see the module docstring

    return frozenset(EntityLoader.get_country_codes())


@dataclass(frozen=True)
class DaysOff:
    """One country's days off, with the holidays' names in `language` where it has them."""

    country: str = "SE"
    language: str = "sv"

    def name_of(self, day: date) -> str | None:
        """The holiday's name, else None (weekends are not named here)."""
        return _calendar(self.country, self.language).get(day)

    def is_day_off(self, day: date) -> bool:
        return day.weekday() >= 5 or day in _calendar(self.country, self.language)

    def shift(self, day: date, workdays: int) -> date:
        """`workdays` working days after `day` (before it when negative); 0 is `day` itself."""
        if abs(workdays) > MAX_WORKDAYS:
            raise ValueError(f"at most {MAX_WORKDAYS} working days, got {abs(workdays)}")
        step = timedelta(days=1 if workdays > 0 else -1)
        for _ in range(abs(workdays)):
            day += step
            while self.is_day_off(day):
                day += step
        return day


# The default (`sender.holidays = "SE"`, names in Swedish).
SWEDISH = DaysOff()


@functools.lru_cache(maxsize=16)
def _calendar(country: str, language: str) -> HolidayBase:
    """The library's calendar for the country; it fills in each year when first asked."""
    import holidays  # imported when asked: see the module docstring

    known = holidays.country_holidays(country)
    categories = [c for c in DAYS_OFF_CATEGORIES if c in known.supported_categories]
    spoken = [tag for tag in known.supported_languages if tag.split("_")[0] == language]
    return holidays.country_holidays(
        country, categories=categories, language=spoken[0] if spoken else None
    )
