"""What `mailer status` reads from PostgreSQL: counts per mail, and each delivery of one."""

from __future__ import annotations

from mailer.delivery import PENDING, TROUBLED, DeliveryState
from mailer.store.postgres.connection import Connection
from mailer.store.rows import DeliveryRow, EventCounts, MailCounts, counted_mails


class Reports(Connection):
    """Read-only answers for people: safe in a read-only session, while the service runs."""

    async def state_counts(self) -> dict[DeliveryState, int]:
        rows = await self._rows("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
        return dict.fromkeys(DeliveryState, 0) | {DeliveryState(s): n for s, n in rows}

    async def mail_counts(self, event_id: str | None = None) -> list[MailCounts]:
        """Counts per state for each mail (of one event, or all), in due order."""
        where, params = ("WHERE event = %s", (event_id,)) if event_id else ("", ())
        # Grouped in the order of the index deliveries_by_event, which holds every column read.
        rows = await self._rows(
            f"SELECT event, mail, MIN(due), MAX(expires), state, COUNT(*) "
            f"FROM deliveries {where} GROUP BY event, state, mail",
            params,
        )
        latest = await self._newest_problems({row[0] for row in rows if row[4] in TROUBLED})
        return counted_mails(rows, latest)

    async def _newest_problems(self, events: set[str]) -> dict[tuple[str, str], str]:
        """Per mail, the newest reply to a delivery in trouble, among the `events` whose counts
        show one: their deliveries found by event and state, not by a scan of every one."""
        if not events:
            return {}
        rows = await self._rows(
            "SELECT DISTINCT ON (d.event, d.mail) d.event, d.mail, a.reply FROM attempts a "
            "JOIN deliveries d ON d.id = a.delivery "
            "WHERE d.event = ANY(%s) AND d.state IN ('retrying', 'failed', 'bounced') "
            "ORDER BY d.event, d.mail, a.at DESC, a.id DESC",
            (sorted(events),),
        )
        return {(event, mail): reply for event, mail, reply in rows}

    async def deliveries_of(self, event_id: str, mail: str) -> list[DeliveryRow]:
        """Each delivery of one mail, by recipient (in code point order, as SQLite sorts,
        whatever the database's collation)."""
        rows = await self._rows(
            "SELECT recipient, state, attempts, last_reply, sent_at, due FROM deliveries "
            'WHERE event = %s AND mail = %s ORDER BY recipient COLLATE "C"',
            (event_id, mail),
        )
        return [DeliveryRow(*row) for row in rows]

    async def event_counts(self) -> dict[str, EventCounts]:
        """Per event: counts per state, and the earliest due time among those waiting."""
        rows = await self._rows(
            "SELECT event, state, COUNT(*), MIN(next_attempt) FROM deliveries GROUP BY event, state"
        )
        found: dict[str, EventCounts] = {}
        for event, state, count, next_attempt in rows:
            item = found.get(event) or EventCounts(event, dict.fromkeys(DeliveryState, 0), None)
            if DeliveryState(state) in PENDING and (
                item.next_due is None or next_attempt < item.next_due
            ):
                item = EventCounts(event, item.counts, next_attempt)
            item.counts[DeliveryState(state)] = count
            found[event] = item
        return found
