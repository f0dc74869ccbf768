"""The versions of events in force in SQLite, and the plans that bring them in."""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from mailer.delivery import DeliveryState
from mailer.plan import Plan, Stored
from mailer.store.rows import EventRow, Version
from mailer.store.sqlite.calendars import note_facts
from mailer.store.sqlite.connection import Connection
from mailer.store.sqlite.queue import PENDING_SQL


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
            "SELECT toml, csv FROM events WHERE id = ? AND toml IS NOT NULL", (event_id,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def event_files(self, event_id: str) -> dict[str, bytes]:
        """The attachments of an event's last valid version as they were checked, by name."""
        rows = await self._rows(
            "SELECT f.name, b.data FROM event_files f JOIN blobs b ON b.digest = f.digest "
            "WHERE f.event = ?",
            (event_id,),
        )
        return {name: bytes(data) for name, data in rows}

    async def stored_deliveries(self, event_id: str) -> list[Stored]:
        """Every delivery of an event, in any state: what planning compares a version with."""
        rows = await self._rows(
            "SELECT id, mail, recipient, due, expires, state FROM deliveries WHERE event = ?",
            (event_id,),
        )
        return [Stored(r[0], r[1], r[2], r[3], r[4], DeliveryState(r[5])) for r in rows]

    async def save_valid(
        self, versions: Sequence[Version], *, now: float, settle_s: float = 0.0
    ) -> None:
        """Remember events' newest valid versions, in the transaction that applies their
        plans (one transaction for many events at start: a commit and a few round trips to
        aiosqlite's thread per batch, not per event). A calendar-relevant change waits
        `settle_s` before it is announced (calendars.note_facts)."""
        async with self.transaction() as db:
            await db.executemany(
                """INSERT INTO events (id, source, title, digest, toml, csv, mails, error,
                                       removed, updated_at, held, ends, stamp)
                   VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                       title = excluded.title, digest = excluded.digest, toml = excluded.toml,
                       csv = excluded.csv, mails = excluded.mails, error = NULL, removed = 0,
                       updated_at = excluded.updated_at, held = excluded.held,
                       ends = excluded.ends, stamp = excluded.stamp""",
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
                    for v in versions
                ],
            )
            await _keep_files(db, versions)
            await _apply(db, [v.plan for v in versions if v.plan is not None])
            await note_facts(db, versions, settle_at=now + settle_s)

    async def save_stamps(self, stamps: Sequence[tuple[str, str, str]]) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE events SET stamp = ? WHERE id = ? AND digest = ?",
                [(stamp, event_id, digest) for event_id, digest, stamp in stamps],
            )

    async def save_error(self, event_id: str, *, source: str, error: str, now: float) -> None:
        """Mark the file invalid; the last valid version (and its deliveries) stays in force."""
        async with self.transaction() as db:
            await db.execute(
                """INSERT INTO events (id, source, error, updated_at) VALUES (?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                       error = excluded.error, removed = 0, updated_at = excluded.updated_at""",
                (event_id, source, error, now),
            )

    async def remove_event(self, event_id: str, *, now: float) -> int:
        """The file is gone: cancel what has not gone out, keep the history."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE events SET removed = 1, error = NULL, updated_at = ? WHERE id = ?",
                (now, event_id),
            )
            cursor = await db.execute(
                f"UPDATE deliveries SET state = 'cancelled', last_reply = 'event file removed' "
                f"WHERE event = ? AND state IN {PENDING_SQL}",
                (event_id,),
            )
            return cursor.rowcount


async def _keep_files(db: aiosqlite.Connection, versions: Sequence[Version]) -> None:
    """The versions' attachments: each content stored once, each event's list replaced;
    contents no version in force attaches any more are dropped."""
    await db.executemany(
        "INSERT INTO blobs (digest, data) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING",
        [(f.digest, f.data) for v in versions for f in v.files],
    )
    await db.executemany(
        "DELETE FROM event_files WHERE event = ?", [(v.event_id,) for v in versions]
    )
    await db.executemany(
        "INSERT INTO event_files (event, name, digest) VALUES (?, ?, ?)",
        [(v.event_id, f.name, f.digest) for v in versions for f in v.files],
    )
    await db.execute(
        "DELETE FROM blobs WHERE NOT EXISTS "
        "(SELECT 1 FROM event_files f WHERE f.digest = blobs.digest)"
    )


async def _apply(db: aiosqlite.Connection, plans: Sequence[Plan]) -> None:
    """Write plans. Guarded by state, so a delivery claimed meanwhile is left as it is.

    Each statement is a round trip to aiosqlite's thread: the empty ones are skipped. The
    rows to insert (10,000 in a batch at start) are generated in that thread as SQLite takes
    them, not built first on the event loop.
    """
    pending = PENDING_SQL
    if any(p.inserts for p in plans):
        await db.executemany(
            "INSERT INTO deliveries (event, mail, recipient, due, expires, state, next_attempt, "
            "message_id) VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?)",
            (
                (p.event_id, w.mail, w.recipient, w.due, w.expires, w.due, w.message_id)
                for p in plans
                for w in p.inserts
            ),
        )
    # So are the rows to retime, revive and cancel (an edit of a 200,000-recipient event's
    # time retimes them all: built as a list here, they held the loop ~60 ms).
    if any(p.retimes for p in plans):
        await db.executemany(
            f"UPDATE deliveries SET due = ?, expires = ?, next_attempt = CASE WHEN state = "
            f"'scheduled' THEN ? ELSE MAX(next_attempt, ?) END WHERE id = ? AND state IN {pending}",
            ((r.due, r.expires, r.due, r.due, r.id) for p in plans for r in p.retimes),
        )
    if any(p.revives for p in plans):
        await db.executemany(
            "UPDATE deliveries SET state = 'scheduled', due = ?, expires = ?, next_attempt = ?, "
            "attempts = 0 WHERE id = ? AND state IN ('cancelled', 'expired')",
            ((r.due, r.expires, r.due, r.id) for p in plans for r in p.revives),
        )
    if any(p.cancels for p in plans):
        await db.executemany(
            f"UPDATE deliveries SET state = 'cancelled', last_reply = 'no longer in the event' "
            f"WHERE id = ? AND state IN {pending}",
            ((i,) for p in plans for i in p.cancels),
        )
