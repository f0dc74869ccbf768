"""The service: load, wake, step, shut down (what to send is the catalog's business, how
one step sends is `sending.py`'s, the APScheduler wake-up `alarm.py`'s).

The database is the queue. APScheduler holds a single wake-up, at the earliest time anything
is due, and only wakes the engine; the engine asks the store what is due by its own clock, and
never waits longer than POLL_S on the loop's monotonic clock, so it also notices what another
process queued and a wall clock set back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from pathlib import Path

from mailer.alarm import Alarm
from mailer.announcing import announce_settled
from mailer.bounces import BounceReader
from mailer.catalog import SETTLE_S, Catalog
from mailer.clock import Clock
from mailer.config import Settings
from mailer.election import Election
from mailer.events import Event
from mailer.outbox import Outbox
from mailer.retention import purge_daily
from mailer.secret import load_keyring
from mailer.sending import Sender, StepResult
from mailer.store import Change, DatabaseGone, Narrow, Store, StoreUnavailable, is_damaged
from mailer.store_trouble import StoreTrouble
from mailer.transports.base import Transport

log = logging.getLogger("mailer")

# A `mailer retry` or `mailer send` from another process changes the queue behind our back;
# looking at the head of the queue this often notices it (one indexed query). On PostgreSQL
# other nodes' changes also wake the engine at once (`heard`); this stays the fallback. The
# engine's own wait is bounded by it: no APScheduler job polls (one in flight at a stop was
# a traceback).
POLL_S = 2.0


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
        poll_s: float = POLL_S,
    ) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.store = store
        self.transport = transport
        self.clock = clock
        self.outbox = Outbox.from_settings(settings)
        self.catalog = Catalog(settings, store=store, outbox=self.outbox, clock=clock)
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self.loaded = asyncio.Event()  # set once `run()` has loaded the plan (READY=1, the page)
        self.sender = Sender(
            settings,
            store=store,
            transport=transport,
            outbox=self.outbox,
            catalog=self.catalog,
            clock=clock,
            rng=rng or random.Random(),
            stopping=self.stopping,
            wakeup=self.wakeup,
        )
        self.alarm = Alarm(self.wakeup)  # APScheduler's one wake-up (`alarm.py`)
        self._trouble = StoreTrouble()

    # -- the events -----------------------------------------------------------------------

    async def load_all(self) -> None:
        """Take back what a stopped process held, and rebuild the plan from the event files
        and the database (SPEC §5.1): what a starting service of one node does."""
        await self.begin()
        await self.catalog.load_all()
        self.wakeup.set()

    async def begin(self) -> None:
        """What a starting service does before it plans or follows another node's plan."""
        # What a stopped process held goes back; a live node or `mailer send` keeps its own.
        taken = await self.store.take_back_abandoned(self.now())
        if taken:
            log.warning(
                "%d deliveries were being sent by a process that stopped; they go out again",
                taken,
            )
        # The key first: a key file that cannot be read stops the start, not the first send.
        self.sender.keyring = await load_keyring(self.settings, self.store)

    async def plan(self, sources: list[Path] | None = None) -> None:
        """Plan these event files (every one in schedules/ if None), taking nothing back from
        another process: what `mailer send` and `mailer rehearse` need."""
        if sources is None:
            await self.catalog.load_all()
        else:
            await self.catalog.sync(sources)

    async def reload(self, sources: set[Path]) -> None:
        """Hot reload of the files the watcher saw change (SPEC §5.2)."""
        await self.catalog.sync(sources, settle_s=SETTLE_S)
        self.wakeup.set()

    def heard(self, change: Change) -> None:
        """Another node changed the plan or the queue (SPEC §9): look now, not at the next
        poll; an event it re-planned is parsed again from the database when next needed."""
        if change.event is not None and change.kind in ("plan", "removed"):
            self.catalog.changed_elsewhere(change.event, source=change.source)
        self.wakeup.set()

    async def event(self, event_id: str) -> Event | None:
        """The version in force of that event, if it has a valid one."""
        return await self.catalog.event(event_id)

    # -- sending --------------------------------------------------------------------------

    async def step(self, *, only: Narrow | None = None, due_by: float | None = None) -> StepResult:
        """Send everything due now; how each delivery ended. Tests call this directly with a
        steered clock; `due_by` makes one pass up to that instant (`mailer send`). Changes
        that have settled are announced first, so their notices go out in this step."""
        domain = self.settings.sender.message_id_domain
        await announce_settled(self.store, now=self.now(), domain=domain)
        return await self.sender.step(only=only, due_by=due_by)

    # -- running --------------------------------------------------------------------------

    async def run(self, *, sources: list[Path] | None = None, watch_folder: bool = True) -> None:
        """The service, until `stop()`: load, then send what is due, re-arm, sleep.

        `sources` limits it to those event files and `watch_folder=False` turns hot reload off:
        what `mailer rehearse` needs to play one event on the real engine.
        """
        election: Election | None = None
        if sources is None:
            await self.begin()
            election = Election(
                self.settings.paths.schedules,
                store=self.store,
                catalog=self.catalog,
                clock=self.clock,
                stopping=self.stopping,
                wakeup=self.wakeup,
                reload=self.reload,
                watch_folder=watch_folder,
            )
            await election.start()  # plans, if no other node does (SPEC §9)
            self.wakeup.set()
        else:
            await self.plan(sources)
        self.alarm.start()
        log.info("running: %d events in force", self.catalog.in_force)
        self.loaded.set()
        # The election watches schedules/ while this node plans, and beats (SPEC §9).
        beside = asyncio.create_task(election.run() if election else self.stopping.wait())
        listener = asyncio.create_task(self.store.listen(self.heard))
        upkeep = asyncio.create_task(self._upkeep() if sources is None else self.stopping.wait())
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                await self._turn()
        finally:
            self.stopping.set()
            self.alarm.stop()  # first: no wake-up fires while the rest winds down
            listener.cancel()
            await asyncio.gather(beside, listener, upkeep, return_exceptions=True)
            await self.close()
            log.info("stopped")

    async def _upkeep(self) -> None:
        """Beside sending, in the service only: the bounce mailbox read (SPEC §11) and the
        daily purge (SPEC §13). Each loop logs its own failures and goes on."""
        loops = [purge_daily(self.settings, self.store, clock=self.clock, stopping=self.stopping)]
        bounces, keyring = self.settings.bounces, self.sender.keyring
        if bounces is not None and keyring is not None:
            reader = BounceReader(bounces, store=self.store, keyring=keyring, clock=self.clock)
            loops.append(reader.run(self.stopping))
        await asyncio.gather(*loops)

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
            except (StoreUnavailable, OSError) as exc:
                failure = exc
        if failure is not None:
            await self._pause_after(failure)
            return
        self._trouble.succeeded()
        await self._wait(self.wakeup, timeout_s=wait_s)
        self.wakeup.clear()

    async def _pause_after(self, failure: BaseException) -> None:
        """A damaged database stops the service; any other store failure pauses it."""
        causes = failure.exceptions if isinstance(failure, BaseExceptionGroup) else (failure,)
        if damaged := next((c for c in causes if is_damaged(c)), None):
            log.critical("the database %s: %s", self.settings.paths.database, damaged)
            raise damaged
        await self._wait(self.stopping, timeout_s=self._trouble.failed(failure))

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
        then by our clock, at most the poll's."""
        next_due = await self.store.next_due()
        if next_due is None or not self.alarm.is_started:
            return self.poll_s
        if self.sender.paused_until is not None:
            next_due = max(next_due, self.sender.paused_until)
        self.alarm.arm(self.clock.wall_time(datetime.fromtimestamp(next_due, UTC)))
        return min(max(next_due - self.now(), 0.0), self.poll_s)

    async def _wait(self, event: asyncio.Event, *, timeout_s: float) -> None:
        """Until `event` or a stop, or `timeout_s` on the loop's monotonic clock."""
        waits = {asyncio.ensure_future(e.wait()) for e in {event, self.stopping}}
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    def stop(self) -> None:
        """Stop taking new work (SIGTERM/SIGINT); `run()` finishes what is in flight."""
        self.stopping.set()

    async def close(self) -> None:
        """Close the transport's sessions and end the rendering workers (the store is the
        caller's: it opened it)."""
        await self.transport.close()
        self.outbox.close()

    def now(self) -> float:
        """The engine's clock, in POSIX seconds (what the store keeps)."""
        return self.clock.now().timestamp()
