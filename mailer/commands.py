"""What each command does: open the store and the transport, call the engine, close.

Every `mailer` command calls one function here: `serve` (run), `send_now` (send),
`send_test` (send --test), `requeue_failed` (retry), `purge_now` (purge), `migrate_to`
(migrate), `check_events` (check), `write_previews` (preview) and `rehearse`; the last three
are the outbox's and rehearsal.py's, named here so that the commands are found in one place.
`status` alone is `status.read_status`: scripts poll it, and it should not import the service.
The engine itself knows nothing of commands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer.checking import check_events
from mailer.clock import Clock
from mailer.config import Settings, SmtpSettings
from mailer.config_values import URL_PASSWORD_REFUSED, url_has_password
from mailer.delivery import DeliveryState, Outcome
from mailer.engine import Engine
from mailer.errors import ConfigError, InputError, MailerError, unusable_database
from mailer.events import Event, Mail, Recipient
from mailer.foresight import Foresight
from mailer.message import build_message, message_id
from mailer.notify import Notifier
from mailer.outbox import Outbox
from mailer.pacing import SharedPace
from mailer.previews import find_event, write_previews
from mailer.rehearsal import rehearse
from mailer.retention import purge_due
from mailer.store import Narrow, Node, Purged, Store, StoreUnavailable, is_damaged
from mailer.store.contract import is_url, open_store
from mailer.transports.base import Transport
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport
from mailer.web import serve_page

__all__ = [
    "SENDABLE",
    "Foresight",
    "SendReport",
    "check_events",
    "migrate_to",
    "purge_now",
    "rehearse",
    "requeue_failed",
    "send_now",
    "send_test",
    "serve",
    "transport_for",
    "write_previews",
]


def transport_for(settings: Settings, *, store: Store | None, clock: Clock) -> Transport:
    """The transport `[transport] kind` names; its `max_per_minute` shared by every process
    on the store's database (SPEC §9). Without a store (one test mail), not paced."""
    if isinstance(settings.transport, SmtpSettings):
        per_minute = settings.sending.max_per_minute
        return SmtpTransport(
            settings.transport,
            connections=settings.sending.connections,
            max_per_minute=per_minute,
            pace=SharedPace(store, max_per_minute=per_minute, clock=clock)
            if per_minute and store is not None
            else None,
        )
    return MaildirTransport(settings.transport.path)


async def serve(settings: Settings, *, clock: Clock) -> None:
    """`mailer run`: the service until SIGTERM or SIGINT, then a clean stop."""
    # What is loaded by now (modules, templates' machinery, settings) lives as long as the
    # process. Frozen out of the collector's sight, a full collection takes a few ms instead
    # of the ~30 ms that held up the event loop (and due mail) every second or so.
    gc.collect()
    gc.freeze()
    lease_s = settings.sending.lease.total_seconds()
    store = await open_store(settings.paths.database, node=Node.here(lease_s=lease_s))
    try:
        engine = Engine(
            settings,
            store=store,
            transport=transport_for(settings, store=store, clock=clock),
            clock=clock,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, engine.stop)
        await _run_with_page(engine, settings)
    except StoreUnavailable as exc:
        if not is_damaged(exc):  # a lock held at start, a full disk: a crash, restarted
            raise
        raise unusable_database(settings.paths.database, exc) from exc
    finally:
        await store.close()


async def _run_with_page(engine: Engine, settings: Settings) -> None:
    """The engine, and beside it once the plan is loaded: systemd's READY=1 and watchdog,
    and the web page (SPEC §12); STOPPING=1 as soon as it stops."""
    beside = asyncio.create_task(_beside(engine, settings))
    try:
        await engine.run()
    finally:
        beside.cancel()
        await asyncio.gather(beside, return_exceptions=True)


async def _beside(engine: Engine, settings: Settings) -> None:
    notifier = Notifier.from_environment()
    try:
        await engine.loaded.wait()
        notifier.send("READY=1")
        tasks = [asyncio.create_task(notifier.keep_alive(engine.stopping))]
        if settings.web.listen:
            tasks.append(asyncio.create_task(serve_page(settings.web, engine)))
        try:
            await engine.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        notifier.send("STOPPING=1")


log = logging.getLogger("mailer")

TEST_PREFIX = "[TEST] "


@dataclass(frozen=True)
class TestSend:
    """What `mailer send --test` did: whose mail it showed, to whom, and the server's word."""

    __test__ = False  # not a pytest class, whatever its name
    rendered_as: str
    to: str
    outcome: Outcome


async def send_test(
    settings: Settings, event_id: str, mail_name: str, *, to: str, as_: str | None, clock: Clock
) -> TestSend:
    """`mailer send --test ADDR`: the mail as `as_` (else its first recipient) would get it,
    sent to ADDR alone with "[TEST] " before the subject (SPEC §10). The event is read from
    its file, as `preview` reads it, so a mail can be tried before the service plans it; no
    delivery is recorded (the database is not even opened), and the message has a
    Message-ID of its own, so a mail client never takes it for the real one."""
    event = find_event(settings, event_id)
    mail = next((m for m in event.mails if m.name == mail_name), None)
    if mail is None:
        known = ", ".join(m.name for m in event.mails)
        raise InputError(f'no mail "{mail_name}" (known: {known})', source=event.source)
    person = _shown_as(event, mail, as_)
    outbox, now = Outbox.from_settings(settings), clock.now()
    transport = transport_for(settings, store=None, clock=clock)
    try:
        rendered = await outbox.pool.render(event, mail, person)
        rendered = dataclasses.replace(rendered, subject=TEST_PREFIX + rendered.subject)
        unique = f"{mail.name}\0test\0{now.timestamp()}"
        raw = build_message(
            event,
            mail,
            Recipient(address=to),
            rendered,
            sender=outbox.sender_for(event),
            attachments=outbox.attachments(event, mail, now=now, language=rendered.language),
            now=now,
            mid=message_id(event.id, unique, to, domain=outbox.sender.message_id_domain),
        )
        outcome = await transport.send(raw, sender=settings.sender.from_, recipient=to)
    finally:
        outbox.close()
        await transport.close()
    log.info("test mail %s/%s as %s to %s: %s", event.id, mail.name, person.key, to, outcome.reply)
    return TestSend(person.key, to, outcome)


def _shown_as(event: Event, mail: Mail, address: str | None) -> Recipient:
    """Whose mail a test send shows: the one named, else the mail's (or event's) first."""
    people = event.recipients_of(mail) or event.recipients[:1]
    if address is None and people:
        return people[0]
    chosen = next((r for r in event.recipients_of(mail) if r.key == (address or "").lower()), None)
    if chosen is None:
        said = f"{address} does not get this mail" if address else "the event has no recipients"
        raise InputError(f"{said} (to: {', '.join(mail.to)})", source=event.source, key=mail.key)
    return chosen


# What `mailer send` puts back in the queue: anything not sent, cancelled or in flight.
SENDABLE = (
    DeliveryState.SCHEDULED,
    DeliveryState.RETRYING,
    DeliveryState.FAILED,
    DeliveryState.EXPIRED,
)


@dataclass(frozen=True)
class SendReport:
    """What `mailer send` did: each delivery it was asked to send, counted once, in the state
    the database holds after its pass (so the counts add up and agree with `mailer status`:
    when sending pauses, the ones tried are retrying and the rest still scheduled)."""

    states: Counter[DeliveryState]
    paused_because: str | None

    @property
    def all_sent(self) -> bool:
        return set(self.states) <= {DeliveryState.SENT}


async def send_now(
    settings: Settings, event_id: str, mail: str, *, recipient: str | None, clock: Clock
) -> SendReport:
    """`mailer send`: queue the mail now for those who have not had it and make one pass.

    Safe while the service runs: what the service has in flight is left alone (no reset of
    `sending` here), and each claim is taken by one process only.
    """
    store = await open_store(settings.paths.database)
    engine: Engine | None = None
    try:  # the store is closed whatever fails: its thread would keep the process alive
        engine = Engine(
            settings,
            store=store,
            transport=transport_for(settings, store=store, clock=clock),
            clock=clock,
        )
        await engine.plan()
        await _check_asked(engine, settings, event_id, mail, recipient)
        asked = {
            d.recipient
            for d in await store.deliveries_of(event_id, mail)
            if d.state in SENDABLE and recipient in (None, d.recipient)
        }
        started = engine.now()
        await store.requeue(event_id, mail, recipient=recipient, now=started, states=SENDABLE)
        step = await engine.step(only=Narrow(event_id, mail, recipient), due_by=started)
        after = await store.deliveries_of(event_id, mail)
        states = Counter(DeliveryState(d.state) for d in after if d.recipient in asked)
        return SendReport(states, step.paused_because)
    finally:
        if engine is not None:
            await engine.close()
        await store.close()


async def _check_asked(
    engine: Engine, settings: Settings, event_id: str, mail: str, recipient: str | None
) -> None:
    event = await engine.event(event_id)
    found = None if event is None else next((m for m in event.mails if m.name == mail), None)
    if event is None or found is None:
        raise MailerError(
            f'no mail "{mail}" in a valid event "{event_id}"', source=settings.paths.schedules
        )
    if recipient is not None and recipient not in {r.key for r in event.recipients_of(found)}:
        raise MailerError(
            f"{recipient} does not get this mail (to: {', '.join(found.to)})",
            source=event.source,
            key=found.key,
        )


async def purge_now(settings: Settings, *, clock: Clock, dry_run: bool) -> Purged:
    """`mailer purge`: erase now the personal data that is due (SPEC §13)."""
    store = await open_store(settings.paths.database)
    try:
        return await purge_due(settings, store, clock=clock, dry_run=dry_run)
    except StoreUnavailable as exc:  # locked, full, the server gone: one line, not a trace
        raise unusable_database(settings.paths.database, exc) from exc
    finally:
        await store.close()


async def requeue_failed(
    settings: Settings, event_id: str, mail: str | None, *, now: datetime
) -> int:
    """`mailer retry`: failed deliveries go back in the queue; a running service picks them
    up within POLL_S, a stopped one at its next start."""
    store = await open_store(settings.paths.database)
    try:
        return await store.requeue(
            event_id, mail, states=(DeliveryState.FAILED,), now=now.timestamp()
        )
    finally:
        await store.close()


async def migrate_to(settings: Settings, url: str) -> dict[str, int]:
    """`mailer migrate`: the SQLite database of these settings copied whole into the empty
    PostgreSQL database `url`; rows per table. psycopg is imported only here and for a URL."""
    if is_url(settings.paths.database):
        raise ConfigError(
            "is a PostgreSQL database already; migrate copies a SQLite file into one",
            key="paths.database",
        )
    if not is_url(url):
        raise ConfigError(
            "expected a postgresql:// URL (postgresql://mailer@db.example.org/mailer)", key="--to"
        )
    if url_has_password(url):
        raise ConfigError(URL_PASSWORD_REFUSED, key="--to")
    from mailer.store.transfer import copy_to_postgres

    return await copy_to_postgres(Path(settings.paths.database), url)
