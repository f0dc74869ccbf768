"""Bounces and personal data in SQLite (SPEC §11, §13): the secret, bounce notices, purges.

A purge erases in one transaction, then rewrites the file (VACUUM) and empties the WAL
(`wal_checkpoint(TRUNCATE)`): an UPDATE leaves the old text in free space of its page and
in WAL frames, where `strings` on the file would still find the address.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import aiosqlite

from mailer.keyring import ERASED_PREFIX, SECRET_BYTES
from mailer.store.rows import Bounce, Purged
from mailer.store.sqlite.connection import Connection, unavailable

# Events whose personal data is due for erasure (SPEC §13): ended (or deleted) before the
# cutoff, with nothing left to send, and something saved since their last purge.
_DUE = """SELECT id FROM events e
    WHERE (COALESCE(ends, (SELECT MAX(expires) FROM deliveries WHERE event = e.id),
                    updated_at) <= :cutoff
           OR (removed = 1 AND updated_at <= :cutoff))
      AND (purged_at IS NULL OR updated_at > purged_at)
      AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event = e.id
                      AND state IN ('scheduled', 'retrying', 'sending'))
    ORDER BY id"""
# The bytes of personal data an event holds: its texts, its deliveries' addresses,
# Message-IDs (a hash of the address anyone can recompute) and replies, its attempts' replies
# and its attachments as stored (a list of names in a PDF is personal data too).
_BYTES = """SELECT
    (SELECT COALESCE(SUM(LENGTH(CAST(COALESCE(toml, '') AS BLOB))
        + LENGTH(CAST(COALESCE(csv, '') AS BLOB)) + LENGTH(CAST(COALESCE(error, '') AS BLOB))), 0)
        FROM events WHERE id = :event),
    (SELECT COUNT(*) FROM deliveries WHERE event = :event),
    (SELECT COALESCE(SUM(CASE WHEN recipient LIKE 'erased:%' THEN 0
            ELSE LENGTH(CAST(recipient AS BLOB)) END
        + LENGTH(CAST(message_id AS BLOB)) + LENGTH(CAST(COALESCE(last_reply, '') AS BLOB))), 0)
        FROM deliveries WHERE event = :event),
    (SELECT COALESCE(SUM(LENGTH(CAST(reply AS BLOB))), 0) FROM attempts
        WHERE delivery IN (SELECT id FROM deliveries WHERE event = :event))
    + (SELECT COALESCE(SUM(LENGTH(b.data)), 0) FROM event_files f
        JOIN blobs b ON b.digest = f.digest WHERE f.event = :event)"""


class Privacy(Connection):
    """The secret keyring.py derives from, bounce notices, and erasing what is due."""

    async def secret(self) -> bytes:
        """Made by the first process that asks, in a transaction: two starting at once get
        the same one."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO secrets (name, value) VALUES ('key', ?) ON CONFLICT DO NOTHING",
                (os.urandom(SECRET_BYTES),),
            )
            async with db.execute("SELECT value FROM secrets WHERE name = 'key'") as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return bytes(row[0])

    async def record_bounce(self, bounce: Bounce) -> str:
        """ "recorded", "seen" (this notice was recorded before) or "unknown" (no such
        delivery). A permanent one bounces a delivery that was sent; either kind is an
        attempt in the log."""
        async with self.transaction() as db:
            async with db.execute(
                "SELECT 1 FROM deliveries WHERE id = ?", (bounce.delivery,)
            ) as cursor:
                if await cursor.fetchone() is None:
                    return "unknown"
            inserted = await db.execute(
                "INSERT INTO bounce_notices (notice, delivery, at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (bounce.notice, bounce.delivery, bounce.at),
            )
            if inserted.rowcount == 0:
                return "seen"
            verdict = "bounced" if bounce.is_permanent else "delayed"
            await db.execute(
                "INSERT INTO attempts (delivery, at, verdict, code, reply) VALUES (?, ?, ?, ?, ?)",
                (bounce.delivery, bounce.at, verdict, bounce.code, bounce.reply),
            )
            if bounce.is_permanent:
                await db.execute(
                    "UPDATE deliveries SET state = 'bounced', last_reply = ? "
                    "WHERE id = ? AND state = 'sent'",
                    (bounce.reply, bounce.delivery),
                )
        return "recorded"

    async def purge(
        self, *, now: float, keep_s: float, erase: Callable[[str], str], dry_run: bool = False
    ) -> Purged:
        """Erase the personal data of events due (SPEC §13); what was erased. Dry: what would
        be, with nothing changed."""
        async with self.transaction() as db:
            async with db.execute(_DUE, {"cutoff": now - keep_s}) as cursor:
                events = tuple(event for (event,) in await cursor.fetchall())
            deliveries = size = 0
            for event in events:
                async with db.execute(_BYTES, {"event": event}) as cursor:
                    texts, count, addresses, replies = await cursor.fetchone() or (0, 0, 0, 0)
                deliveries += count
                size += texts + addresses + replies
                if not dry_run:
                    await _erase(db, event, erase=erase, now=now)
        if events and not dry_run:
            await self._rewrite()
        return Purged(events, deliveries, size)

    async def _rewrite(self) -> None:
        """The file rewritten and the WAL emptied: no erased text left in free space."""
        async with self._lock:
            try:
                await self.db.execute("VACUUM")  # needs room for a copy: may find the disk full
                await self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except aiosqlite.Error as exc:  # outside `transaction`: said as it would say it
                if (fault := unavailable(exc)) is not None:
                    raise fault from exc
                raise


async def _erase(
    db: aiosqlite.Connection, event: str, *, erase: Callable[[str], str], now: float
) -> None:
    async with db.execute(
        "SELECT id, recipient FROM deliveries WHERE event = ? AND recipient NOT LIKE ?",
        (event, ERASED_PREFIX + "%"),
    ) as cursor:
        rows = await cursor.fetchall()
    await db.executemany(
        "UPDATE deliveries SET recipient = ? WHERE id = ?",
        [(erase(recipient), id_) for id_, recipient in rows],
    )
    await db.execute(
        "UPDATE deliveries SET last_reply = NULL, message_id = '' WHERE event = ?", (event,)
    )
    await db.execute(
        "UPDATE attempts SET reply = '' WHERE delivery IN "
        "(SELECT id FROM deliveries WHERE event = ?)",
        (event,),
    )
    await db.execute("DELETE FROM event_files WHERE event = ?", (event,))
    await db.execute(
        "DELETE FROM blobs WHERE NOT EXISTS "
        "(SELECT 1 FROM event_files f WHERE f.digest = blobs.digest)"
    )
    await db.execute(
        "UPDATE events SET toml = NULL, csv = NULL, error = NULL, purged_at = ? WHERE id = ?",
        (now, event),
    )
