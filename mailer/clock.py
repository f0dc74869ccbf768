"""The only reader of the time: a `Clock` is passed in, so tests and `rehearse` can steer it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...

    def wall_time(self, instant: datetime) -> datetime:
        """When the real clock (which APScheduler reads) will reach `instant` on this clock."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def wall_time(self, instant: datetime) -> datetime:
        return instant


class ManualClock:
    """A clock that moves only when told to: for tests that must not depend on luck."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def wall_time(self, instant: datetime) -> datetime:
        """As far ahead in real time as `instant` is ahead on this clock; tests that advance
        the clock by hand set the engine's wake-up themselves."""
        return datetime.now(UTC) + (instant - self._now)

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, instant: datetime) -> None:
        self._now = instant
