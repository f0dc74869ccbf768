"""The versions of events in force in PostgreSQL, and the plans that bring them in."""

from __future__ import annotations

from collections.abc import Sequence

from mailer.delivery import DeliveryState
from mailer.plan import Plan, Stored
from mailer.store.postgres.calendars import note_facts
from mailer.store.postgres.connection import Connection, Db
from mailer.store.postgres.queue import PENDING_SQL
from mailer.store.postgres.wakeups import announce
from mailer.store.rows import EventRow, Version


class Versions(Connection):
    """Each event's last valid version (kept while its file is invalid) and its deliveries."""

    async def events(self) -> dict[str, EventRow]:
        """Every event known, without the texts of its last valid version (megabytes at
        1,000 events, and needed only while a file is invalid: `last_valid`)."""
        rows = await self._rows(
            "SELECT id, source, title, digest, error, removed, mails, held, stamp FROM events"
        )
        return {
            id_: EventRow(
                id_, source, title, digest, error, bool(removed), mails, bool(held), stamp
            )
            for id_, source, title, digest, error, removed, mails, held, stamp in rows
        }

    async def last_valid(self, event_id: str) -> tuple[str, str | None] | None:
        """The TOML and CSV text of an event's last valid version, if it had one."""
        rows = await self._rows(
            "SELECT toml, csv FROM events WHERE id = %s AND toml IS NOT NULL", (event_id,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def event_files(self, event_id: str) -> dict[str, bytes]:
        """The attachments of an event's last valid version as they were checked, by name."""
        rows = await self._rows(
            "SELECT f.name, b.data FROM event_files f JOIN blobs b ON b.digest = f.digest "
            "WHERE f.event = %s",
            (event_id,),
        )
        return {name: bytes(data) for name, data in rows}

    async def stored_deliveries(self, event_id: str) -> list[Stored]:
        """Every delivery of an event, in any state: what planning compares a version with."""
        rows = await self._rows(
            "SELECT id, mail, recipient, due, expires, state FROM deliveries WHERE event = %s",
            (event_id,),
        )
        return [Stored(r[0], r[1], r[2], r[3], r[4], DeliveryState(r[5])) for r in rows]

    async def save_valid(
        self, versions: Sequence[Version], *, now: float, settle_s: float = 0.0
    ) -> None:
        """Remember events' newest valid versions, in the transaction that applies their
        plans (one transaction for many events at start); a calendar-relevant change waits
        `settle_s` before it is announced (calendars.note_facts)."""
        async with self.transaction() as db, db.cursor() as cursor:
            await cursor.executemany(
                """INSERT INTO events (id, source, title, digest, toml, csv, mails, error,
                                       removed, updated_at, held, ends, stamp)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, FALSE, %s, %s, %s, %s)
                   ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                       title = excluded.title, digest = excluded.digest, toml = excluded.toml,
                       csv = excluded.csv, mails = excluded.mails, error = NULL,
                       removed = FALSE, updated_at = excluded.updated_at,
                       held = excluded.held, ends = excluded.ends""",
                [
                    (
                        v.event_id,
                        v.source,
                        v.title,
                        v.digest,
                        v.toml,
                        v.csv,
                        v.mails,
                        now,
                        v.held,
                        v.ends,
                        v.stamp,
                    )
                    for v in sorted(versions, key=lambda v: v.event_id)
                ],
            )
            await _keep_files(db, versions)
            await _apply(db, [v.plan for v in versions if v.plan is not None])
            for v in versions:
                if v.plan is not None:  # a version in force other nodes may hold parsed
                    await announce(db, self.node, "plan", event=v.event_id, source=v.source)
            ordered = sorted(versions, key=lambda v: v.event_id)  # row locks in one order
            await note_facts(db, ordered, settle_at=now + settle_s)

    async def save_stamps(self, stamps: Sequence[tuple[str, str, str]]) -> None:
        async with self.transaction() as db, db.cursor() as cursor:
            await cursor.executemany(
                "UPDATE events SET stamp = %s WHERE id = %s AND digest = %s",
                [(stamp, event_id, digest) for event_id, digest, stamp in stamps],
            )

    async def save_error(self, event_id: str, *, source: str, error: str, now: float) -> None:
        """Mark the file invalid; the last valid version (and its deliveries) stays in force."""
        async with self.transaction() as db:
            await db.execute(
                """INSERT INTO events (id, source, error, updated_at) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                       error = excluded.error, removed = FALSE,
                       updated_at = excluded.updated_at""",
                (event_id, source, error, now),
            )

    async def remove_event(self, event_id: str, *, now: float) -> int:
        """The file is gone: cancel what has not gone out, keep the history."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE events SET removed = TRUE, error = NULL, updated_at = %s WHERE id = %s",
                (now, event_id),
            )
            cursor = await db.execute(
                f"UPDATE deliveries SET state = 'cancelled', last_reply = 'event file removed' "
                f"WHERE event = %s AND state IN {PENDING_SQL}",
                (event_id,),
            )
            await announce(db, self.node, "removed", event=event_id)
            return cursor.rowcount


async def _keep_files(db: Db, versions: Sequence[Version]) -> None:
    """The versions' attachments: each content stored once, each event's list replaced;
    contents no version in force attaches any more are dropped."""
    files = [(v.event_id, f) for v in sorted(versions, key=lambda v: v.event_id) for f in v.files]
    async with db.cursor() as cursor:
        if files:
            await cursor.executemany(
                "INSERT INTO blobs (digest, data) VALUES (%s, %s) ON CONFLICT (digest) DO NOTHING",
                sorted({(f.digest, f.data) for _, f in files}),
            )
        await cursor.execute(
            "DELETE FROM event_files WHERE event = ANY(%s)", ([v.event_id for v in versions],)
        )
        if files:
            await cursor.executemany(
                "INSERT INTO event_files (event, name, digest) VALUES (%s, %s, %s)",
                [(event_id, f.name, f.digest) for event_id, f in files],
            )
        await cursor.execute(
            "DELETE FROM blobs WHERE NOT EXISTS "
            "(SELECT 1 FROM event_files f WHERE f.digest = blobs.digest)"
        )


async def _apply(db: Db, plans: Sequence[Plan]) -> None:
    """Write plans. Guarded by state, so a delivery claimed meanwhile is left as it is (a
    claim's row lock makes the guard wait for the claim's commit, then see `sending`).

    Statements are sent in pipeline mode by `executemany`: one round trip per batch, not per
    row; the empty ones are skipped.
    """
    pending = PENDING_SQL
    async with db.cursor() as cursor:
        if any(p.inserts for p in plans):
            await cursor.executemany(
                "INSERT INTO deliveries (event, mail, recipient, due, expires, state, "
                "next_attempt, message_id) VALUES (%s, %s, %s, %s, %s, 'scheduled', %s, %s)",
                [
                    (p.event_id, w.mail, w.recipient, w.due, w.expires, w.due, w.message_id)
                    for p in plans
                    for w in p.inserts
                ],
            )
        if any(p.retimes for p in plans):
            await cursor.executemany(
                f"UPDATE deliveries SET due = %s, expires = %s, next_attempt = CASE WHEN "
                f"state = 'scheduled' THEN %s ELSE GREATEST(next_attempt, %s) END "
                f"WHERE id = %s AND state IN {pending}",
                [
                    (r.due, r.expires, r.due, r.due, r.id)
                    for r in sorted((r for p in plans for r in p.retimes), key=lambda r: r.id)
                ],
            )
        if any(p.revives for p in plans):
            await cursor.executemany(
                "UPDATE deliveries SET state = 'scheduled', due = %s, expires = %s, "
                "next_attempt = %s, attempts = 0 WHERE id = %s "
                "AND state IN ('cancelled', 'expired')",
                [
                    (r.due, r.expires, r.due, r.id)
                    for r in sorted((r for p in plans for r in p.revives), key=lambda r: r.id)
                ],
            )
        cancels = sorted(i for p in plans for i in p.cancels)
        if cancels:
            await cursor.execute(
                f"UPDATE deliveries SET state = 'cancelled', "
                f"last_reply = 'no longer in the event' WHERE id = ANY(%s) AND state IN {pending}",
                (cancels,),
            )
