"""The service: plan, wake, send, record, shut down.

The database is the queue. APScheduler holds a single wake-up, at the earliest time anything
is due, and only wakes the engine; the engine asks the store what is due by its own clock.
`connections` sessions take claimed deliveries, compose each message, hand it to the
transport and wait until the outcome is committed before taking the next, so a crash can
repeat at most the messages in flight (SPEC §5.3).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import signal
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailer.clock import Clock
from mailer.config import Settings
from mailer.config import SmtpTransport as SmtpSettings
from mailer.errors import MailerError
from mailer.events import Event, EventDefaults
from mailer.outbox import Outbox
from mailer.plan import DeliveryState, wanted_deliveries
from mailer.policy import RetryPolicy
from mailer.sources import Loaded, defaults_for, find_event_files, load_event, load_stored
from mailer.status import status_report
from mailer.store import Attempt, Claimed, Store
from mailer.transports.base import Outcome, Transport, Verdict
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport
from mailer.watcher import watch

log = logging.getLogger("mailer")

# How many due deliveries one claim takes: enough to keep every session busy between two
# claims, few enough that a crash leaves little to put back in the queue.
CLAIM_BATCH = 100
# A `mailer retry` or `mailer send` from another process changes the queue behind our back;
# looking at the head of the queue this often notices it (one indexed query).
POLL_S = 2.0
# A file that vanished or fails to parse during hot reload is read again after this pause:
# long enough for an editor's save or a copy to finish, short enough to reload within 1 s.
SETTLE_S = 0.3


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
        self.events: dict[str, Event] = {}
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None

    # -- planning -------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Rebuild the plan from the event files and the database (SPEC §5.1)."""
        interrupted = await self.store.reset_interrupted()
        if interrupted:
            log.warning(
                "%d deliveries were being sent at the last stop; they go out again", interrupted
            )
        sources = await asyncio.to_thread(find_event_files, self.settings.paths.schedules)
        await self.sync(sources, all_sources=True)

    async def sync(
        self, sources: Iterable[Path], *, all_sources: bool = False, settle_s: float = 0.0
    ) -> None:
        """Bring the named event files (all of them at start) into force: valid versions are
        planned, invalid ones keep the last valid version, vanished ones are cancelled.

        With `settle_s` (hot reload), a file that looks deleted or invalid is read once more
        after that pause: an editor mid-save or a copy in progress is not a deletion or an
        error, and nothing is cancelled on its account.
        """
        defaults = defaults_for(self.settings)
        stored = await self.store.events()
        loaded = {s: await asyncio.to_thread(load_event, s, defaults=defaults) for s in sources}
        doubtful = [source for source, item in loaded.items() if item.event is None]
        if settle_s and doubtful:
            await asyncio.sleep(settle_s)
            for source in doubtful:
                loaded[source] = await asyncio.to_thread(load_event, source, defaults=defaults)
        for source, item in loaded.items():
            known = item.id in self.events or item.id in stored
            if settle_s and item.event is not None and await self._would_cancel(item):
                item = await self._settled(item, settle_s=settle_s, defaults=defaults)
            if item.event is not None:
                row = stored.get(item.id)
                await self.apply(item, stored_digest=row.digest if row else None)
            elif not source.exists():
                if known:
                    await self.remove(item.id)
            else:
                await self.keep_last_valid(item, stored)
        if all_sources:
            for event_id, row in stored.items():
                if event_id not in {item.id for item in loaded.values()} and not row.removed:
                    await self.remove(event_id)
        self.wakeup.set()

    async def _would_cancel(self, loaded: Loaded) -> bool:
        assert loaded.event is not None
        wanted = wanted_deliveries(loaded.event, domain=self.settings.sender.message_id_domain)
        return bool((await self.store.plan(loaded.id, wanted)).cancels)

    async def _settled(self, loaded: Loaded, *, settle_s: float, defaults: EventDefaults) -> Loaded:
        """A version that cancels deliveries may be a file cut off mid-write that still parses
        (fewer recipients): read it again after a pause and take the newer reading, unless it
        has meanwhile become invalid, in which case the last valid version stays in force."""
        await asyncio.sleep(settle_s)
        again = await asyncio.to_thread(load_event, loaded.source, defaults=defaults)
        return again if again.digest != loaded.digest else loaded

    async def reload(self, sources: set[Path]) -> None:
        """Hot reload of the files the watcher saw change (SPEC §5.2)."""
        await self.sync(sources, settle_s=SETTLE_S)

    async def apply(self, loaded: Loaded, *, stored_digest: str | None) -> None:
        event = loaded.event
        assert event is not None
        digest = self._plan_digest(loaded.digest)
        self.events[event.id] = event
        self.outbox.forget(event.id)
        plan = None
        if digest != stored_digest:
            wanted = wanted_deliveries(event, domain=self.settings.sender.message_id_domain)
            plan = await self.store.plan(event.id, wanted)
        await self.store.save_valid(
            event.id,
            source=str(loaded.source),
            title=event.title,
            digest=digest,
            toml=loaded.toml,
            csv=loaded.csv,
            plan=plan,
            now=self._now(),
        )
        if plan is not None and not plan.is_empty:
            log.info("%s: plan updated: %s", event.id, plan.summary())

    def _plan_digest(self, content_digest: str) -> str:
        """The plan depends on the files and on the settings that shape times and IDs."""
        sending, sender = self.settings.sending, self.settings.sender
        basis = (
            f"{content_digest}|{sending.max_lateness}|{sender.timezone}|{sender.language}|"
            f"{sender.message_id_domain}"
        )
        return hashlib.sha256(basis.encode()).hexdigest()

    async def keep_last_valid(self, loaded: Loaded, stored: dict) -> None:
        """SPEC §5.2: an invalid file changes nothing; the last valid version stays in force."""
        log.error("%s", loaded.error)
        await self.store.save_error(
            loaded.id, source=str(loaded.source), error=str(loaded.error), now=self._now()
        )
        row = stored.get(loaded.id)
        if loaded.id not in self.events and row is not None and row.toml:
            try:
                self.events[loaded.id] = load_stored(
                    loaded.source,
                    toml=row.toml,
                    csv_text=row.csv,
                    defaults=defaults_for(self.settings),
                )
            except MailerError as exc:
                log.error("%s: the last valid version no longer loads: %s", loaded.id, exc)

    async def remove(self, event_id: str) -> None:
        cancelled = await self.store.remove_event(event_id, now=self._now())
        self.events.pop(event_id, None)
        log.info("%s: event file removed; %d undelivered deliveries cancelled", event_id, cancelled)

    # -- sending --------------------------------------------------------------------------

    async def step(self, *, only: tuple[str, str] | None = None) -> int:
        """Send everything due now over `connections` concurrent sessions; how many went.

        Each session takes the next claimed delivery, sends it and waits until its outcome
        is committed before taking another; a session that finds nothing left claims the
        next batch. Tests call this directly with a steered clock.
        """
        claimed: deque[Claimed] = deque()
        claim_lock = asyncio.Lock()

        async def take() -> Claimed | None:
            async with claim_lock:
                if not claimed and not self.stopping.is_set():
                    batch, expired = await self.store.claim_due(
                        self._now(), limit=CLAIM_BATCH, only=only
                    )
                    if expired:
                        log.warning("%d deliveries expired before they could be sent", expired)
                    claimed.extend(batch)
                return claimed.popleft() if claimed and not self.stopping.is_set() else None

        async def session() -> int:
            sent = 0
            while (delivery := await take()) is not None:
                try:
                    await self.deliver(delivery)
                except MailerError as exc:  # the store failed: leave it `sending` for restart
                    log.error(
                        "recording %s/%s to %s failed: %s",
                        delivery.event,
                        delivery.mail,
                        delivery.recipient,
                        exc,
                    )
                    raise
                sent += 1
            return sent

        counts = await asyncio.gather(
            *(session() for _ in range(self.settings.sending.connections))
        )
        return sum(counts)

    async def deliver(self, claimed: Claimed) -> DeliveryState:
        """Compose, send and record one delivery; the state it ended in."""
        event = self.events.get(claimed.event)
        mail = event and next((m for m in event.mails if m.name == claimed.mail), None)
        recipient = mail and next(
            (r for r in event.recipients_of(mail) if r.key == claimed.recipient), None
        )
        if event is None or mail is None or recipient is None:
            await self.store.set_state(
                [claimed.id], DeliveryState.CANCELLED, reply="no longer in the event"
            )
            return DeliveryState.CANCELLED
        now = self.clock.now()
        try:
            message = self.outbox.compose(event, mail, recipient, now=now)
        except MailerError as exc:
            outcome = Outcome(Verdict.FAIL, f"cannot compose the message: {exc}")
        else:
            outcome = await self.transport.send(
                bytes(message), sender=self.settings.sender.from_, recipient=recipient.address
            )
        return await self.record(claimed, outcome)

    async def record(self, claimed: Claimed, outcome: Outcome) -> DeliveryState:
        now = self._now()
        step = self.policy.after(
            outcome.verdict,
            attempts_made=claimed.attempts + 1,
            due=claimed.due,
            expires=claimed.expires,
            now=now,
            rng=self.rng,
        )
        await self.store.record(
            Attempt(
                delivery=claimed.id,
                at=now,
                verdict=outcome.verdict.value,
                code=outcome.code,
                reply=outcome.reply,
                state=step.state,
                attempts=claimed.attempts + 1,
                next_attempt=step.next_attempt,
            )
        )
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
        if step.next_attempt is not None:
            self.wakeup.set()
        return step.state

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """The service, until `stop()`: load, then send what is due, re-arm, sleep."""
        await self.load_all()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._poke,
            "interval",
            seconds=POLL_S,
            id="poll",
            misfire_grace_time=None,
            coalesce=True,
        )
        self._scheduler.start()
        log.info("running: %d events in force", len(self.events))
        watcher = asyncio.create_task(
            watch(self.settings.paths.schedules, self.reload, stop=self.stopping)
        )
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                await self._step_or_stop()
                await self._arm()
                await self._wait_for_wakeup()
        finally:
            self.stopping.set()
            await asyncio.gather(watcher, return_exceptions=True)
            await self._shut_down()

    async def _step_or_stop(self) -> None:
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
        await asyncio.gather(step, return_exceptions=True)

    async def _arm(self) -> None:
        """One wake-up at the earliest due time; `misfire_grace_time=None` because a late
        wake-up (a slow start, a busy loop) must still fire: APScheduler's default of 1 s
        would silently skip it (MEASUREMENTS.md)."""
        next_due = await self.store.next_due()
        if next_due is None or self._scheduler is None:
            return
        when = self.clock.wall_time(datetime.fromtimestamp(next_due, UTC))
        self._scheduler.add_job(
            self._poke,
            "date",
            run_date=when,
            id="wake",
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    async def _poke(self) -> None:
        self.wakeup.set()

    async def _wait_for_wakeup(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        wake = asyncio.ensure_future(self.wakeup.wait())
        await asyncio.wait((stop, wake), return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, wake):
            task.cancel()
        self.wakeup.clear()

    def stop(self) -> None:
        """Stop taking new work (SIGTERM/SIGINT); `run()` finishes what is in flight."""
        self.stopping.set()

    async def _shut_down(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        await self.transport.close()
        # Claimed but never handed over: back to the queue for the next start.
        await self.store.reset_interrupted()
        log.info("stopped")

    def _now(self) -> float:
        return self.clock.now().timestamp()


def transport_for(settings: Settings) -> Transport:
    """The transport `[transport] kind` names."""
    if isinstance(settings.transport, SmtpSettings):
        return SmtpTransport(
            settings.transport,
            connections=settings.sending.connections,
            max_per_minute=settings.sending.max_per_minute,
        )
    return MaildirTransport(settings.transport.path)


async def serve(settings: Settings, *, clock: Clock) -> None:
    """`mailer run`: the service until SIGTERM or SIGINT, then a clean stop."""
    store = await Store.open(settings.paths.database)
    engine = Engine(settings, store=store, transport=transport_for(settings), clock=clock)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, engine.stop)
    try:
        await engine.run()
    finally:
        await store.close()


async def send_now(
    settings: Settings, event_id: str, mail: str, *, recipient: str | None, clock: Clock
) -> int:
    """`mailer send`: queue the mail now for those who have not had it, and send it."""
    store = await Store.open(settings.paths.database)
    engine = Engine(settings, store=store, transport=transport_for(settings), clock=clock)
    try:
        await engine.load_all()
        if event_id not in engine.events or mail not in {
            m.name for m in engine.events[event_id].mails
        }:
            raise MailerError(
                f'no mail "{mail}" in a valid event "{event_id}"', source=settings.paths.schedules
            )
        await store.requeue(
            event_id,
            mail,
            recipient=recipient,
            now=engine._now(),
            states=(
                DeliveryState.SCHEDULED,
                DeliveryState.RETRYING,
                DeliveryState.FAILED,
                DeliveryState.EXPIRED,
            ),
        )
        return await engine.step(only=(event_id, mail))
    finally:
        await engine.transport.close()
        await store.close()


async def read_status(settings: Settings, *, event_id: str | None, mail: str | None) -> dict:
    """`mailer status`: read-only, safe while the service runs (WAL)."""
    store = await Store.open(settings.paths.database)
    try:
        return await status_report(store, zone=settings.sender.zone, event_id=event_id, mail=mail)
    finally:
        await store.close()


async def requeue_failed(
    settings: Settings, event_id: str, mail: str | None, *, now: datetime
) -> int:
    """`mailer retry`: failed deliveries go back in the queue; a running service picks them
    up within POLL_S, a stopped one at its next start."""
    store = await Store.open(settings.paths.database)
    try:
        return await store.requeue(
            event_id, mail, states=(DeliveryState.FAILED,), now=now.timestamp()
        )
    finally:
        await store.close()
