"""Calendar identity in PostgreSQL (SPEC §10): each event's SEQUENCE, the facts last announced,
a change waiting to settle, and the notices a settled change sends, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from mailer.delivery import Wanted
from mailer.store.postgres.connection import Connection, Db
from mailer.store.postgres.queue import PENDING_SQL
from mailer.store.rows import CalendarRow, Version

_COLUMNS = "event, sequence, announced, previous, pending, settle_at, notify"


class Calendars(Connection):
    """Read and advance the calendar identities; `note_facts` runs inside `save_valid`."""

    async def calendar(self, event_id: str) -> CalendarRow | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM calendars WHERE event = %s", (event_id,))
        return _row(rows[0]) if rows else None

    async def settled(self, now: float) -> list[CalendarRow]:
        """The changes whose settling time has come: each is one round of notices."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM calendars WHERE pending IS NOT NULL AND settle_at <= %s",
            (now,),
        )
        return [_row(r) for r in rows]

    async def recipients_told(
        self, event_id: str, mails: Sequence[str] | None, *, recipient: str | None = None
    ) -> list[str]:
        """Who was sent any of these mails of the event (any mail at all if None)."""
        sql = "SELECT DISTINCT recipient FROM deliveries WHERE event = %s AND state = 'sent'"
        params: list[str] = [event_id]
        if mails is not None:
            sql += f" AND mail IN ({', '.join(['%s'] * len(mails))})"
            params += mails
        if recipient is not None:
            sql += " AND recipient = %s"
            params.append(recipient)
        return sorted(r[0] for r in await self._rows(sql, params))

    async def announce(self, row: CalendarRow, notices: Sequence[Wanted]) -> bool:
        """Make the settled change the one in force (SEQUENCE + 1) and queue its notices;
        False if the row moved meanwhile (another edit, or another process announced it).
        Notices of an earlier round not yet out are replaced: the newest one says it all."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE calendars SET sequence = sequence + 1, previous = announced, "
                "announced = pending, pending = NULL, settle_at = NULL "
                "WHERE event = %s AND sequence = %s AND pending = %s",
                (row.event, row.sequence, row.pending),
            )
            if cursor.rowcount != 1:
                return False
            await db.execute(
                f"UPDATE deliveries SET state = 'cancelled', last_reply = 'a later change "
                f"replaced it' WHERE event = %s AND mail IN ('update', 'cancellation') "
                f"AND state IN {PENDING_SQL}",
                (row.event,),
            )
            if notices:
                await _queue(db, row.event, notices)
        return True


async def _queue(db: Db, event_id: str, notices: Sequence[Wanted]) -> None:
    async with db.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO deliveries (event, mail, recipient, due, expires, state, "
            "next_attempt, message_id) VALUES (%s, %s, %s, %s, %s, 'scheduled', %s, %s) "
            "ON CONFLICT (event, mail, recipient) DO UPDATE SET state = 'scheduled', "
            "due = excluded.due, expires = excluded.expires, attempts = 0, "
            "next_attempt = excluded.next_attempt, message_id = excluded.message_id, "
            "first_attempt = NULL, last_reply = NULL WHERE deliveries.state != 'sending'",
            [
                (event_id, n.mail, n.recipient, n.due, n.expires, n.due, n.message_id)
                for n in notices
            ],
        )


async def note_facts(db: Db, versions: Sequence[Version], *, settle_at: float) -> None:
    """Compare each version's calendar facts with those announced: equal, nothing waits (an
    edit undone in time); new, they wait until `settle_at`; the same change saved again
    keeps its time. A first version is announced as it is, at SEQUENCE 0."""
    facts = [(v.event_id, v.facts, v.notify, settle_at) for v in versions if v.facts is not None]
    if not facts:
        return
    async with db.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO calendars (event, sequence, announced, notify) VALUES (%s, 0, %s, %s) "
            "ON CONFLICT (event) DO UPDATE SET notify = excluded.notify, "
            "settle_at = CASE WHEN excluded.announced = calendars.announced THEN NULL "
            "WHEN excluded.announced = calendars.pending THEN calendars.settle_at ELSE %s END, "
            "pending = CASE WHEN excluded.announced = calendars.announced THEN NULL "
            "ELSE excluded.announced END",
            facts,
        )


def _row(r: Sequence[object]) -> CalendarRow:
    event, sequence, announced, previous, pending, settle_at, notify = r
    return CalendarRow(
        str(event),
        int(sequence),  # type: ignore[call-overload]
        str(announced),
        None if previous is None else str(previous),
        None if pending is None else str(pending),
        None if settle_at is None else float(settle_at),  # type: ignore[arg-type]
        bool(notify),
    )
