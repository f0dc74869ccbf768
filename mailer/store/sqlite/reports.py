"""What `mailer status` reads from SQLite: counts per mail, and each delivery of one."""

from __future__ import annotations

import json

from mailer.delivery import PENDING, TROUBLED, DeliveryState
from mailer.store.rows import DeliveryRow, EventCounts, MailCounts, counted_mails
from mailer.store.sqlite.connection import Connection


class Reports(Connection):
    """Read-only answers for people: safe on a read-only connection, while the service runs."""

    async def state_counts(self) -> dict[DeliveryState, int]:
        rows = await self._rows("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
        return dict.fromkeys(DeliveryState, 0) | {DeliveryState(s): n for s, n in rows}

    async def mail_counts(self, event_id: str | None = None) -> list[MailCounts]:
        """Counts per state for each mail (of one event, or all), in due order."""
        where, params = ("WHERE event = ?", (event_id,)) if event_id else ("", ())
        # Grouped in the order of the index deliveries_by_event, down to the times (a mail's
        # deliveries share its times: one group per mail and state, but for history), so the
        # index alone answers, with no sort and no MIN or MAX to work out for each delivery:
        # at 200,000 deliveries 30-40 ms instead of 150-200 (a scan and a sort); at 2,000,000,
        # 290 ms instead of 340-430 with MIN(due) and MAX(expires) per mail and state.
        rows = await self._rows(
            f"SELECT event, mail, due, expires, state, COUNT(*) "
            f"FROM deliveries {where} GROUP BY event, state, mail, due, expires",
            params,
        )
        latest = await self._newest_problems({row[0] for row in rows if row[4] in TROUBLED})
        return counted_mails(rows, latest)

    async def _newest_problems(self, events: set[str]) -> dict[tuple[str, str], str]:
        """Per mail, the newest reply to a delivery in trouble, among the `events` whose counts
        show one: their deliveries found by event and state in deliveries_by_event, not by a
        scan of every delivery. (SQLite takes the bare column from the row with the MAX.)"""
        if not events:
            return {}
        rows = await self._rows(
            "SELECT d.event, d.mail, a.reply, MAX(a.at) FROM deliveries d "
            "JOIN attempts a ON a.delivery = d.id "
            "WHERE d.event IN (SELECT value FROM json_each(?)) "
            "AND d.state IN ('retrying', 'failed', 'bounced') "
            "GROUP BY d.event, d.mail",
            (json.dumps(sorted(events)),),
        )
        return {(event, mail): reply for event, mail, reply, _ in rows}

    async def deliveries_of(self, event_id: str, mail: str) -> list[DeliveryRow]:
        """Each delivery of one mail, by recipient."""
        rows = await self._rows(
            "SELECT recipient, state, attempts, last_reply, sent_at, due FROM deliveries "
            "WHERE event = ? AND mail = ? ORDER BY recipient",
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
