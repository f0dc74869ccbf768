"""The engine's alarm clock: one APScheduler wake-up at the earliest time anything is due.

Split from `engine.py` (issue 13). APScheduler reads the wall clock itself, so it only wakes
the engine (STYLE §3): its one job sets the engine's `wakeup`, and the engine asks the store
what is due by its own clock. The engine's own bounded wait stays the safeguard against a
wall clock set back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler


class Alarm:
    """Sets `wakeup` at the wall-clock time last armed; nothing else."""

    def __init__(self, wakeup: asyncio.Event) -> None:
        self.wakeup = wakeup
        self.scheduler: AsyncIOScheduler | None = None

    @property
    def is_started(self) -> bool:
        return self.scheduler is not None

    def start(self) -> None:
        # The debug executor calls the job on the loop as the scheduler finds it due: the
        # asyncio one runs it as a task (or in a thread) that a stop can cancel before it
        # ran, which APScheduler logs as an error with a CancelledError traceback.
        self.scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": DebugExecutor()})
        self.scheduler.start()

    def arm(self, run_date: datetime) -> None:
        """The one wake-up, at `run_date` (wall-clock time), replacing the one before."""
        self._wake("wake", "date", run_date=run_date)

    def _wake(self, job_id: str, trigger: str, **when: Any) -> None:
        """(Re)place a job that only pokes the engine. `misfire_grace_time=None`: a late
        wake-up (a slow start, a busy loop) must still fire; APScheduler's default of 1 s
        would silently skip it (MEASUREMENTS.md)."""
        assert self.scheduler is not None
        self.scheduler.add_job(
            self._poke,
            trigger,
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
            **when,
        )

    def _poke(self) -> None:
        """The job: a plain function, called on the loop by the debug executor."""
        self.wakeup.set()

    def stop(self) -> None:
        """Once: APScheduler stops on the loop's next turn, and a second call would raise."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
