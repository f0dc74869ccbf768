"""Telling people an event changed (SPEC §10): settled changes become rounds of notices, and
each calendar-bearing message gets the revision (SEQUENCE, METHOD) it belongs to.

A change waits in the store until `sending.change_settle` after the last edit that changed
it (store.save_valid); `announce_settled`, called before each step of sending, makes it the
revision in force and queues its notices, one transaction per round, so a crash leaves
either the old revision and no notices or the new one with all of them queued.
"""

from __future__ import annotations

import json
import logging

from mailer.events import Event, Mail, Recipient
from mailer.ics import CANCEL, Identity
from mailer.notices import (
    NOTICES,
    Facts,
    changes_between,
    notice_kind,
    notice_mail,
    notice_message_id,
    told_by,
)
from mailer.outbox import Outbox
from mailer.plan import Wanted
from mailer.store import CalendarRow, Store

log = logging.getLogger("mailer")


async def announce_settled(store: Store, *, now: float, domain: str) -> int:
    """Every change whose settling time has come becomes the revision in force, its notices
    queued (none with `notify_changes = false`); how many rounds."""
    rounds = 0
    settled = await store.settled(now)
    if not settled:
        return 0
    events = await store.events()
    for row in settled:
        assert row.pending is not None
        before, after = Facts.from_json(row.announced), Facts.from_json(row.pending)
        kind = notice_kind(before, after)
        notices: list[Wanted] = []
        if row.notify and row.event in events:
            calendar = [m["name"] for m in json.loads(events[row.event].mails) if m.get("calendar")]
            told = await store.recipients_told(row.event, told_by(kind, calendar))
            sequence = row.sequence + 1
            notices = [
                Wanted(
                    kind,
                    recipient,
                    now,
                    after.ends,
                    notice_message_id(row.event, kind, sequence, recipient, domain=domain),
                )
                for recipient in told
            ]
        if await store.announce(row, notices):
            rounds += 1
            log.info(
                "%s: calendar revision %d in force; %d %s notices queued",
                row.event,
                row.sequence + 1,
                len(notices),
                kind,
            )
    return rounds


async def revision(
    store: Store,
    outbox: Outbox,
    event: Event,
    mail: Mail,
    recipient: Recipient,
    *,
    known: dict[str, CalendarRow | None] | None = None,
) -> tuple[Mail, Identity]:
    """The mail as it goes out now, and its calendar identity: a notice gets what changed
    (from the revision before this one) and, for a cancellation, a calendar file only if
    this person got one. `known`: rows already read in this step (one look-up per event,
    not per message: a revision is announced between steps)."""
    known = {} if known is None else known
    if event.id not in known:
        known[event.id] = await store.calendar(event.id)
    row = known[event.id]
    sequence = row.sequence if row is not None else 0
    if mail.name not in NOTICES or row is None:
        return mail, outbox.identity(sequence)
    if mail.name == "cancellation":
        calendars = [m.name for m in event.mails if m.calendar]
        got = await store.recipients_told(event.id, calendars, recipient=recipient.key)
        notice = notice_mail(event, mail.name, changes=(), calendar=bool(got))
        return notice, outbox.identity(sequence, method=CANCEL)
    return notice_mail(event, mail.name, changes=_changes(row, event), calendar=True), (
        outbox.identity(sequence)
    )


def _changes(row: CalendarRow, event: Event) -> tuple[dict[str, object], ...]:
    before = Facts.from_json(row.previous or row.announced)
    return changes_between(before, Facts.from_json(row.announced), event.timezone)
