"""Bounces and personal data in PostgreSQL (SPEC §11, §13): the secret, bounce notices,
purges, as `mailer.store.sqlite.privacy` does them.

After a purge the tables are VACUUMed: the old row versions become free space for new rows
at once instead of whenever autovacuum comes by. Their bytes stay on disk until reused; the
operator's guide says so (VACUUM FULL rewrites the tables, under an exclusive lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import psycopg

from mailer.keyring import ERASED_PREFIX, SECRET_BYTES
from mailer.store.postgres.connection import Connection, Db, unavailable
from mailer.store.rows import Bounce, Purged

# As SQLite's: ended (or deleted) before the cutoff, nothing left to send, saved since.
_DUE = """SELECT id FROM events e
    WHERE (COALESCE(ends, (SELECT MAX(expires) FROM deliveries WHERE event = e.id),
                    updated_at) <= %(cutoff)s
           OR (removed AND updated_at <= %(cutoff)s))
      AND (purged_at IS NULL OR updated_at > purged_at)
      AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event = e.id
                      AND state IN ('scheduled', 'retrying', 'sending'))
    ORDER BY id"""
_BYTES = """SELECT
    (SELECT COALESCE(SUM(octet_length(COALESCE(toml, '')) + octet_length(COALESCE(csv, ''))
        + octet_length(COALESCE(error, ''))), 0) FROM events WHERE id = %(event)s),
    (SELECT COUNT(*) FROM deliveries WHERE event = %(event)s),
    (SELECT COALESCE(SUM(CASE WHEN recipient LIKE 'erased:%%' THEN 0
            ELSE octet_length(recipient) END
        + octet_length(message_id) + octet_length(COALESCE(last_reply, ''))), 0)
        FROM deliveries WHERE event = %(event)s),
    (SELECT COALESCE(SUM(octet_length(reply)), 0) FROM attempts
        WHERE delivery IN (SELECT id FROM deliveries WHERE event = %(event)s))
    + (SELECT COALESCE(SUM(octet_length(b.data)), 0) FROM event_files f
        JOIN blobs b ON b.digest = f.digest WHERE f.event = %(event)s)"""


class Privacy(Connection):
    """The secret keyring.py derives from, bounce notices, and erasing what is due."""

    async def secret(self) -> bytes:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO secrets (name, value) VALUES ('key', %s) ON CONFLICT DO NOTHING",
                (os.urandom(SECRET_BYTES),),
            )
            cursor = await db.execute("SELECT value FROM secrets WHERE name = 'key'")
            row = await cursor.fetchone()
        assert row is not None
        return bytes(row[0])

    async def record_bounce(self, bounce: Bounce) -> str:
        async with self.transaction() as db:
            cursor = await db.execute(
                "SELECT 1 FROM deliveries WHERE id = %s FOR UPDATE", (bounce.delivery,)
            )
            if await cursor.fetchone() is None:
                return "unknown"
            inserted = await db.execute(
                "INSERT INTO bounce_notices (notice, delivery, at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (bounce.notice, bounce.delivery, bounce.at),
            )
            if inserted.rowcount == 0:
                return "seen"
            verdict = "bounced" if bounce.is_permanent else "delayed"
            await db.execute(
                "INSERT INTO attempts (delivery, at, verdict, code, reply) "
                "VALUES (%s, %s, %s, %s, %s)",
                (bounce.delivery, bounce.at, verdict, bounce.code, bounce.reply),
            )
            if bounce.is_permanent:
                await db.execute(
                    "UPDATE deliveries SET state = 'bounced', last_reply = %s "
                    "WHERE id = %s AND state = 'sent'",
                    (bounce.reply, bounce.delivery),
                )
        return "recorded"

    async def purge(
        self, *, now: float, keep_s: float, erase: Callable[[str], str], dry_run: bool = False
    ) -> Purged:
        async with self.transaction() as db:
            cursor = await db.execute(_DUE, {"cutoff": now - keep_s})
            events = tuple(event for (event,) in await cursor.fetchall())
            deliveries = size = 0
            for event in events:
                cursor = await db.execute(_BYTES, {"event": event})
                texts, count, addresses, replies = await cursor.fetchone() or (0, 0, 0, 0)
                deliveries += count
                size += texts + addresses + replies
                if not dry_run:
                    await _erase(db, event, erase=erase, now=now)
        if events and not dry_run:
            await self._vacuum()
        return Purged(events, int(deliveries), int(size))

    async def _vacuum(self) -> None:
        """Outside any transaction (VACUUM refuses to run in one): pool connections are in
        autocommit mode."""
        try:
            async with self.pool.connection() as db:
                # Not the tables' owner: autovacuum will come by.
                with contextlib.suppress(psycopg.Error):
                    await db.execute("VACUUM events, deliveries, attempts, event_files, blobs")
        except psycopg.Error as exc:  # no connection to lend: said as `transaction` says it
            if (fault := unavailable(exc)) is not None:
                raise fault from exc
            raise


async def _erase(db: Db, event: str, *, erase: Callable[[str], str], now: float) -> None:
    cursor = await db.execute(
        "SELECT id, recipient FROM deliveries WHERE event = %s AND recipient NOT LIKE %s "
        "ORDER BY id FOR UPDATE",
        (event, ERASED_PREFIX + "%"),
    )
    rows = await cursor.fetchall()
    async with db.cursor() as many:
        await many.executemany(
            "UPDATE deliveries SET recipient = %s WHERE id = %s",
            [(erase(recipient), id_) for id_, recipient in rows],
        )
    await db.execute(
        "UPDATE deliveries SET last_reply = NULL, message_id = '' WHERE event = %s", (event,)
    )
    await db.execute(
        "UPDATE attempts SET reply = '' WHERE delivery IN "
        "(SELECT id FROM deliveries WHERE event = %s)",
        (event,),
    )
    await db.execute("DELETE FROM event_files WHERE event = %s", (event,))
    await db.execute(
        "DELETE FROM blobs WHERE NOT EXISTS "
        "(SELECT 1 FROM event_files f WHERE f.digest = blobs.digest)"
    )
    await db.execute(
        "UPDATE events SET toml = NULL, csv = NULL, error = NULL, purged_at = %s WHERE id = %s",
        (now, event),
    )
