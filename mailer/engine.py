"""The service: wake, send, record, shut down (what to send is the catalog's business).

The database is the queue. APScheduler holds a single wake-up, at the earliest time anything
is due, and only wakes the engine; the engine asks the store what is due by its own clock, and
never waits longer than POLL_S on the loop's monotonic clock, so it also notices what another
process queued and a wall clock set back.
`connections` sessions take claimed deliveries, compose each message, hand it to the
transport and wait until the outcome is committed before taking the next, so a crash can
repeat at most the messages in flight (SPEC §5.3).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailer.catalog import SETTLE_S, Catalog
from mailer.clock import Clock
from mailer.config import Settings
from mailer.delivery import DeliveryState, Outcome, Verdict
from mailer.errors import MailerError
from mailer.outbox import Outbox
from mailer.policy import RetryPolicy
from mailer.store import HEARTBEAT_S, Attempt, Claimed, DatabaseGone, Narrow, Store, is_damaged
from mailer.transports.base import Transport
from mailer.watcher import watch

log = logging.getLogger("mailer")

# How many due deliveries one claim takes: enough to keep every session busy between two
# claims, few enough that a crash leaves little to put back in the queue.
CLAIM_BATCH = 100
# A `mailer retry` or `mailer send` from another process changes the queue behind our back;
# looking at the head of the queue this often notices it (one indexed query). The engine's own
# wait is bounded by it: no APScheduler job polls (one in flight at a stop was a traceback).
POLL_S = 2.0
# After a store failure (another process holding the lock, a full disk) the engine waits
# this long before it tries again, doubled for each failure in a row up to STORE_PAUSE_MAX_S:
# quick after a hiccup, and no busy loop (or a log line per loop) while the fault lasts.
STORE_PAUSE_S = 1.0
STORE_PAUSE_MAX_S = 30.0


class StoreTrouble:
    """Store failures in a row: the pause before the next try, and one log line per kind."""

    def __init__(self) -> None:
        self.failures = 0
        self._kinds: set[str] = set()

    def failed(self, exc: BaseException) -> float:
        """Say a new kind of failure once; the pause (s) before trying again."""
        causes = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        for cause in causes:
            kind = getattr(cause, "sqlite_errorname", None) or type(cause).__name__
            if kind not in self._kinds:
                self._kinds.add(kind)
                log.error(
                    "sending stopped for now: %s; trying again after pauses growing to "
                    "%.0f s (said once for each kind of failure)",
                    cause,
                    STORE_PAUSE_MAX_S,
                )
        self.failures += 1
        return min(STORE_PAUSE_S * 2 ** (self.failures - 1), STORE_PAUSE_MAX_S)

    def succeeded(self) -> None:
        if self.failures:
            log.warning("sending resumed: the database works again (%d failures)", self.failures)
        self.failures = 0
        self._kinds.clear()


class Engine:
    """Owns the store, the transport and the events in force; `run()` is the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        transport: Transport,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.clock = clock
        self.outbox = Outbox.from_settings(settings)
        self.policy = RetryPolicy.from_settings(settings.sending)
        self.rng = rng or random.Random()
        self.catalog = Catalog(settings, store=store, outbox=self.outbox, clock=clock)
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        self._paused_until: float | None = None
        self.paused_because: str | None = None
        # How each delivery of the last step ended, by id (what `mailer send` reports). Per
        # step, not for the life of the service: that would grow by one entry per delivery.
        self.outcomes: dict[int, DeliveryState] = {}
        # Left over from a step the store failed: outcomes of messages that did go out (to be
        # recorded, never sent again) and claims to put back in the queue.
        self._unrecorded: dict[int, Attempt] = {}
        self._unreleased: set[int] = set()
        self._trouble = StoreTrouble()
        self.heartbeat_s = HEARTBEAT_S  # how often a step renews its leases (SPEC §9)

    # -- planning -------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Rebuild the plan from the event files and the database (SPEC §5.1)."""
        # What a stopped process held goes back; a live `mailer send` keeps its own.
        taken = await self.store.take_back_abandoned(self._now())
        if taken:
            log.warning(
                "%d deliveries were being sent by a process that stopped; they go out again",
                taken,
            )
        await self.catalog.load_all()
        self.wakeup.set()

    async def reload(self, sources: set[Path]) -> None:
        """Hot reload of the files the watcher saw change (SPEC §5.2)."""
        await self.catalog.sync(sources, settle_s=SETTLE_S)
        self.wakeup.set()

    # -- sending --------------------------------------------------------------------------

    async def step(self, *, only: Narrow | None = None, due_by: float | None = None) -> int:
        """Send everything due now over `connections` concurrent sessions; how many went.

        Each session takes the next claimed delivery, sends it and waits until its outcome
        is committed before taking another; a session that finds nothing left claims the
        next batch. Tests call this directly with a steered clock. `due_by` stops it from
        taking what falls due (a retry) after that instant: `mailer send` makes one pass.
        """
        claimed: deque[Claimed] = deque()
        claim_lock = asyncio.Lock()
        self.outcomes = {}
        await self._settle_leftovers()

        def may_go_on() -> bool:
            return not self.stopping.is_set() and not self._is_paused()

        async def take() -> Claimed | None:
            async with claim_lock:
                if not claimed and may_go_on():
                    batch, expired = await self.store.claim_due(
                        self._now() if due_by is None else due_by, limit=CLAIM_BATCH, only=only
                    )
                    if expired:
                        log.warning("%d deliveries expired before they could be sent", expired)
                    claimed.extend(batch)
                return claimed.popleft() if claimed and may_go_on() else None

        async def session() -> int:
            handled = 0
            while (delivery := await take()) is not None:
                try:
                    self.outcomes[delivery.id] = await self.deliver(delivery)
                except BaseException:
                    # Stopped mid-send, or the store failed: back to the queue, to be tried
                    # again (it may have gone out: at-least-once for what is in flight);
                    # unless it went out and only its record failed.
                    if delivery.id not in self._unrecorded:
                        claimed.appendleft(delivery)
                    raise
                handled += 1
            return handled

        if self._is_paused():
            return 0
        heartbeat = asyncio.create_task(self._renew_leases())
        try:  # one session failing (the store) stops the others: a TaskGroup cancels them
            async with asyncio.TaskGroup() as sessions:
                tasks = [
                    sessions.create_task(session())
                    for _ in range(self.settings.sending.connections)
                ]
        finally:  # paused, stopping or failed with claims in hand: back to the queue
            if claimed:
                ids = [c.id for c in claimed]
                self._unreleased.update(ids)
                await asyncio.shield(self.store.release(ids))
                self._unreleased.difference_update(ids)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        return sum(task.result() for task in tasks)

    async def _renew_leases(self) -> None:
        """While a step holds claims: renew their leases, so that no other process takes
        them back as a stopped one's. A renewal the store fails is tried at the next beat
        (the step's own store calls say what is wrong)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.store.renew_leases(self._now())
            except (aiosqlite.Error, OSError):
                continue

    async def _settle_leftovers(self) -> None:
        """Finish what a failed step left: record what went out, requeue what did not."""
        if self._unrecorded:
            await self.store.record_now(list(self._unrecorded.values()))
            self._unrecorded.clear()
        if self._unreleased:
            await self.store.release(sorted(self._unreleased))
            self._unreleased.clear()

    def _is_paused(self) -> bool:
        return self._paused_until is not None and self._now() < self._paused_until

    def _pause(self, reply: str) -> None:
        """A fault every message would share (a refused login, a refused certificate): stop
        sending until `backoff_first` has passed, instead of failing one login per delivery
        (which can also lock the account), and say loudly what to fix."""
        if self._is_paused():  # the other sessions in flight hit the same wall
            return
        pause_s = self.settings.sending.backoff_first.total_seconds()
        self._paused_until = self._now() + pause_s
        self.paused_because = reply
        log.error("sending paused for %.0f s until this is fixed: %s", pause_s, reply)

    async def deliver(self, claimed: Claimed) -> DeliveryState:
        """Compose, send and record one delivery; the state it ended in."""
        found = await self.catalog.find(claimed.event, claimed.mail, claimed.recipient)
        if found is None:  # edited away since it was planned: never sent, not an error
            await self.store.set_state(
                [claimed.id], DeliveryState.CANCELLED, reply="no longer in the event"
            )
            return DeliveryState.CANCELLED
        event, mail, recipient = found
        now = self.clock.now()
        try:
            message = await self.outbox.compose_async(event, mail, recipient, now=now)
        except (MailerError, ValueError, UnicodeError) as exc:  # flattening can raise too
            outcome = Outcome(Verdict.FAIL, f"cannot compose the message: {exc}")
        else:
            outcome = await self.transport.send(
                message, sender=self.settings.sender.from_, recipient=recipient.address
            )
        return await self.record(claimed, outcome)

    async def record(self, claimed: Claimed, outcome: Outcome) -> DeliveryState:
        now = self._now()
        step = self.policy.after(
            outcome.verdict,
            attempts_made=claimed.attempts + 1,
            first_attempt=claimed.first_attempt if claimed.first_attempt is not None else now,
            expires=claimed.expires,
            now=now,
            rng=self.rng,
        )
        attempt = Attempt(
            delivery=claimed.id,
            at=now,
            verdict=outcome.verdict.value,
            code=outcome.code,
            reply=outcome.reply,
            state=step.state,
            attempts=claimed.attempts + 1,
            next_attempt=step.next_attempt,
        )
        try:
            await self.store.record(attempt)
        except BaseException:  # the message went out: record it later, never send it again
            self._unrecorded[claimed.id] = attempt
            raise
        level = logging.INFO if step.state is DeliveryState.SENT else logging.WARNING
        log.log(
            level,
            "%s/%s to %s: %s (%s)",
            claimed.event,
            claimed.mail,
            claimed.recipient,
            step.state.value,
            outcome.reply,
        )
        if outcome.needs_attention:
            self._pause(outcome.reply)
        if step.next_attempt is not None:
            self.wakeup.set()
        return step.state

    # -- running --------------------------------------------------------------------------

    async def run(self, *, sources: list[Path] | None = None, watch_folder: bool = True) -> None:
        """The service, until `stop()`: load, then send what is due, re-arm, sleep.

        `sources` limits it to those event files and `watch_folder=False` turns hot reload off:
        what `mailer rehearse` needs to play one event on the real engine.
        """
        if sources is None:
            await self.load_all()
        else:
            await self.catalog.sync(sources)
        # The debug executor calls the job on the loop as the scheduler finds it due: the
        # asyncio one runs it as a task (or in a thread) that a stop can cancel before it
        # ran, which APScheduler logs as an error with a CancelledError traceback.
        self._scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": DebugExecutor()})
        self._scheduler.start()
        log.info("running: %d events in force", self.catalog.in_force)
        watcher = asyncio.create_task(
            watch(self.settings.paths.schedules, self.reload, stop=self.stopping)
            if watch_folder
            else self.stopping.wait()
        )
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                await self._turn()
        finally:
            self.stopping.set()
            self._stop_scheduler()  # first: no wake-up fires while the rest winds down
            await asyncio.gather(watcher, return_exceptions=True)
            await self._shut_down()

    async def _turn(self) -> None:
        """One step, then a wait bounded on the loop's monotonic clock: at most until the
        next due time by our clock, and POLL_S. APScheduler arms its jobs in wall-clock time,
        so a clock set back an hour would leave them an hour late (issue 11); this wait does
        not care. After a store failure, a growing pause instead."""
        try:
            self.store.ensure_same_file()
        except DatabaseGone as exc:  # stop, loudly: a restart would send everything again
            log.critical("%s", exc)
            raise
        failure = await self._step_or_stop()
        if self.stopping.is_set():
            return
        if failure is None:
            try:
                wait_s = await self._arm()
            except (aiosqlite.Error, OSError) as exc:
                failure = exc
        if failure is not None:
            causes = failure.exceptions if isinstance(failure, BaseExceptionGroup) else (failure,)
            if damaged := next((c for c in causes if is_damaged(c)), None):
                log.critical("the database %s: %s", self.settings.paths.database, damaged)
                raise damaged
            await self._wait(self.stopping, timeout_s=self._trouble.failed(failure))
            return
        self._trouble.succeeded()
        await self._wait(self.wakeup, timeout_s=wait_s)
        self.wakeup.clear()

    async def _step_or_stop(self) -> BaseException | None:
        """Run a step; on stop, let messages in flight finish within `shutdown_grace`."""
        step = asyncio.create_task(self.step())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not step.done():
            grace = self.settings.sending.shutdown_grace.total_seconds()
            await asyncio.wait((step,), timeout=grace)
            if not step.done():
                log.warning("shutdown: sends still in flight after %.0f s abandoned", grace)
                step.cancel()
        (result,) = await asyncio.gather(step, return_exceptions=True)
        # The store failed (a lock held too long, a full disk), or the step was cancelled.
        return result if isinstance(result, BaseException) else None

    async def _arm(self) -> float:
        """One wake-up at the earliest due time (or the end of a pause); the seconds until
        then by our clock, at most POLL_S."""
        next_due = await self.store.next_due()
        if next_due is None or self._scheduler is None:
            return POLL_S
        if self._paused_until is not None:
            next_due = max(next_due, self._paused_until)
        self._wake(
            "wake", "date", run_date=self.clock.wall_time(datetime.fromtimestamp(next_due, UTC))
        )
        return min(max(next_due - self._now(), 0.0), POLL_S)

    def _wake(self, job_id: str, trigger: str, **when: Any) -> None:
        """(Re)place a job that only pokes the engine. `misfire_grace_time=None`: a late
        wake-up (a slow start, a busy loop) must still fire; APScheduler's default of 1 s
        would silently skip it (MEASUREMENTS.md)."""
        assert self._scheduler is not None
        self._scheduler.add_job(
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

    async def _wait(self, event: asyncio.Event, *, timeout_s: float) -> None:
        """Until `event` or a stop, or `timeout_s` on the loop's monotonic clock."""
        waits = {asyncio.ensure_future(e.wait()) for e in {event, self.stopping}}
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    def stop(self) -> None:
        """Stop taking new work (SIGTERM/SIGINT); `run()` finishes what is in flight."""
        self.stopping.set()

    def _stop_scheduler(self) -> None:
        """Once: APScheduler stops on the loop's next turn, and a second call would raise."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def _shut_down(self) -> None:
        await self.transport.close()
        self.outbox.close()  # the rendering workers
        log.info("stopped")

    def _now(self) -> float:
        return self.clock.now().timestamp()
