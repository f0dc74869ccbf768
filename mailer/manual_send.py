"""`mailer send`: one mail sent now by hand, to those who have not had it (`send_now`), or
as a test to one address with nothing recorded (`send_test`). Apart from commands.py, which
names both, as sending by hand is a job of its own: checking who was asked, counting what
the pass did, rendering a test as one recipient would see it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass

from mailer.clock import Clock
from mailer.config import Settings
from mailer.delivery import DeliveryState, Outcome
from mailer.engine import Engine
from mailer.errors import InputError, MailerError
from mailer.events import Event, Mail, Recipient
from mailer.message import build_message, message_id
from mailer.outbox import Outbox
from mailer.previews import find_event
from mailer.store import Narrow
from mailer.store.contract import open_store
from mailer.transport_choice import transport_for

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
