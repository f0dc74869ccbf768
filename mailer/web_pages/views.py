"""What each page shows, read from the store and the events in force, in the reader's
language and the event's time zone. No I/O of its own but the reads it awaits."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import parse_pattern

from mailer.delivery import DeliveryState
from mailer.events import Event
from mailer.store import DeliveryRow, Store

# Short enough for a phone's line, with the weekday organisers plan by.
TIME_PATTERN = "EEE d MMM y HH:mm"


def when(seconds: float | datetime | None, zone: ZoneInfo, language: str) -> str:
    """A moment as the reader writes it, in `zone`: "ons 16 juni 2027 09:00"."""
    if seconds is None:
        return ""
    moment = seconds if isinstance(seconds, datetime) else datetime.fromtimestamp(seconds, zone)
    return str(_PATTERN.apply(moment.astimezone(zone), _locale(language)))


# babel's format_datetime looks the locale and the pattern up on every call: 28 ms for the
# thousand rows of the events page, 8 ms with both parsed once.
_PATTERN = parse_pattern(TIME_PATTERN)


@functools.cache
def _locale(language: str) -> Locale:
    return Locale.parse(language)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """Only the states that have deliveries, in the lifecycle's order."""
    return {str(s): counts[s] for s in DeliveryState if counts.get(s)}


@dataclass(frozen=True)
class EventLine:
    id: str
    title: str
    source: str
    error: str | None
    removed: bool
    held: bool  # `hold = true` (SPEC §10): planned, nothing sent
    in_force: bool
    next_due: str
    counts: dict[str, int]


async def event_lines(store: Store, *, zone: ZoneInfo, language: str) -> list[EventLine]:
    """Every event known, by id: the events page."""
    rows, counts = await store.events(), await store.event_counts()
    lines = []
    for row in sorted(rows.values(), key=lambda r: r.id):
        counted = counts.get(row.id)
        lines.append(
            EventLine(
                id=row.id,
                title=row.title,
                source=row.source,
                error=row.error,
                removed=row.removed,
                held=row.held,
                in_force=row.digest is not None,
                next_due=when(counted.next_due if counted else None, zone, language),
                counts=nonzero(counted.counts) if counted else {},
            )
        )
    return lines


@dataclass(frozen=True)
class MailLine:
    name: str
    due: str
    expires: str
    to: tuple[str, ...] | None  # None: no longer in the version in force
    counts: dict[str, int] = field(default_factory=dict)
    problem: str | None = None


async def mail_lines(
    store: Store, event_id: str, planned_json: str, *, zone: ZoneInfo, language: str
) -> list[MailLine]:
    """The mails of the version in force (even those nobody gets yet), then any others that
    still have history, in due order, with counts per state: one event's page."""
    counted = {m.mail: m for m in await store.mail_counts(event_id)}
    rows: list[tuple[float, float, str, tuple[str, ...] | None]] = [
        (p["due"], p["expires"], p["name"], tuple(p["to"])) for p in json.loads(planned_json)
    ]
    planned = {name for _, _, name, _ in rows}
    rows += [(m.due, m.expires, m.mail, None) for m in counted.values() if m.mail not in planned]
    lines = []
    for due, expires, name, to in sorted(rows, key=lambda row: (row[0], row[2])):
        item = counted.get(name)
        lines.append(
            MailLine(
                name=name,
                due=when(due, zone, language),
                expires=when(expires, zone, language),
                to=to,
                counts=nonzero(item.counts) if item else {},
                problem=item.problem if item else None,
            )
        )
    return lines


@dataclass(frozen=True)
class PersonLine:
    address: str
    name: str
    state: str
    attempts: int
    last_reply: str
    sent_at: str


def person_lines(
    rows: list[DeliveryRow], event: Event | None, *, zone: ZoneInfo, language: str
) -> list[PersonLine]:
    """One mail's deliveries, by recipient, with the name the event gives each."""
    people = event.by_key if event is not None else {}
    return [
        PersonLine(
            address=row.recipient,
            name=people[row.recipient].name if row.recipient in people else "",
            state=row.state,
            attempts=row.attempts,
            last_reply=row.last_reply or "",
            sent_at=when(row.sent_at, zone, language),
        )
        for row in rows
    ]
