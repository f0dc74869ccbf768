"""A step of the wall clock: the engine still wakes on the loop's monotonic clock.

APScheduler arms its jobs in wall-clock time: set the clock back an hour and they fire an
hour late, the 2 s poll included (issue 11: a mail due 20 s later was unsent after 73 s).
APScheduler reads the real clock, which a test cannot step; so the test steps the engine's
clock, and pauses APScheduler, which is what its jobs being an hour away amounts to.
"""

from __future__ import annotations

import asyncio
import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.config import load_settings
from mailer.engine import POLL_S, Engine
from mailer.store import Store
from mailer.transports.maildir import MaildirTransport
from tests.project import make_project, timed_event, write_event
from tests.test_service import until

pytestmark = pytest.mark.timeout(30)


class SteppedClock:
    """The system clock plus a step the test sets, as `datetime.now()` reads after an
    operator (or a broken NTP) set the clock."""

    def __init__(self) -> None:
        self.step = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.step

    def wall_time(self, instant: datetime) -> datetime:
        return instant - self.step


def sent(root: Path) -> int:
    folder = root / "var" / "maildir"
    return len(mailbox.Maildir(folder, create=False)) if folder.exists() else 0


async def test_a_clock_set_back_and_corrected_leaves_due_mail_late_by_seconds_not_an_hour(
    tmp_path: Path,
):
    make_project(tmp_path, connections=4)
    due = datetime.now(UTC) + timedelta(seconds=3)
    write_event(tmp_path, "seminarium", timed_event(due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
    settings = load_settings(tmp_path / "config.toml")
    store = await Store.open(settings.paths.database)
    clock = SteppedClock()
    engine = Engine(
        settings, store=store, transport=MaildirTransport(tmp_path / "var" / "maildir"), clock=clock
    )
    service = asyncio.create_task(engine.run())
    try:
        await until(lambda: engine.alarm.scheduler is not None and engine.alarm.scheduler.running)
        assert engine.alarm.scheduler is not None
        engine.alarm.scheduler.pause()  # its jobs are an hour away now: none fires in this test
        clock.step = -timedelta(hours=1)  # the clock set back an hour...
        await asyncio.sleep(1.0)
        assert sent(tmp_path) == 0
        clock.step = timedelta(0)  # ...and corrected a second later
        await until(lambda: sent(tmp_path) == 2, timeout_s=10)  # was never sent before
        late_s = (datetime.now(UTC) - due).total_seconds()
        assert late_s < POLL_S + 1.5
    finally:
        engine.stop()
        await asyncio.wait_for(service, timeout=10)
        await store.close()


async def test_a_clock_stepped_forward_sends_what_fell_due_at_once(tmp_path: Path):
    make_project(tmp_path)
    due = datetime.now(UTC) + timedelta(hours=2)
    write_event(tmp_path, "seminarium", timed_event(due.strftime("%Y-%m-%dT%H:%M:%SZ")))
    settings = load_settings(tmp_path / "config.toml")
    store = await Store.open(settings.paths.database)
    clock = SteppedClock()
    engine = Engine(
        settings, store=store, transport=MaildirTransport(tmp_path / "var" / "maildir"), clock=clock
    )
    service = asyncio.create_task(engine.run())
    try:
        await until(lambda: engine.alarm.scheduler is not None and engine.alarm.scheduler.running)
        assert engine.alarm.scheduler is not None
        engine.alarm.scheduler.pause()
        clock.step = timedelta(hours=2, seconds=1)  # two hours later, all of a sudden
        await until(lambda: sent(tmp_path) == 2, timeout_s=POLL_S + 5)
    finally:
        engine.stop()
        await asyncio.wait_for(service, timeout=10)
        await store.close()
