"""Delivery state in SQLite through aiosqlite: the only module that speaks SQL.

The unique key on (event, mail, recipient) makes "sent twice" a constraint, not a hope.
WAL mode lets `status`, `check` and `preview` read while the service writes; in WAL mode
a committed transaction survives `kill -9` whatever `synchronous` says (FULL adds only
power-loss safety at ~5x the cost per commit, see MEASUREMENTS.md), so NORMAL it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from mailer.errors import ConfigError
from mailer.plan import PENDING, DeliveryState, Plan, Stored, Wanted, plan_event

# Each entry migrates the schema from version N to N+1; `PRAGMA user_version` says where we are.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            digest TEXT,             -- content hash of the last valid version
            toml TEXT,               -- the last valid version itself, kept in force while
            csv TEXT,                -- the file on disk is invalid, across restarts too
            error TEXT,              -- why the file on disk is invalid now, or NULL
            removed INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            event TEXT NOT NULL,
            mail TEXT NOT NULL,
            recipient TEXT NOT NULL,  -- the lower-cased address
            due REAL NOT NULL,        -- unix seconds
            expires REAL NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_reply TEXT,
            sent_at REAL,
            message_id TEXT NOT NULL,
            UNIQUE (event, mail, recipient)
        )""",
        """CREATE INDEX deliveries_queue ON deliveries (next_attempt)
            WHERE state IN ('scheduled', 'retrying')""",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery INTEGER NOT NULL REFERENCES deliveries (id),
            at REAL NOT NULL,
            verdict TEXT NOT NULL,
            code INTEGER,
            reply TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery)",
    ),
    (
        # The mails of the version in force (JSON: name, due, expires, to), so status shows
        # a mail nobody gets yet, such as the follow-up lab before anyone has attended.
        "ALTER TABLE events ADD COLUMN mails TEXT NOT NULL DEFAULT '[]'",
    ),
    (
        # give_up_after counts from the first attempt: a late registrant's delivery, due
        # days ago, must not fail on its first 451.
        "ALTER TABLE deliveries ADD COLUMN first_attempt REAL",
    ),
)
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    # Another process (a `mailer retry`, a backup) may hold the lock for a moment.
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
)
# Deliveries (wanted and stored) from which an event is planned in a thread, off the loop.
PLAN_IN_THREAD_FROM = 2_000
_PENDING_SQL = "('scheduled', 'retrying')"
# Back in the queue as it was before it was claimed: retrying if it had been tried before.
_REQUEUED = "state = CASE WHEN attempts > 0 THEN 'retrying' ELSE 'scheduled' END"


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for sending: state `sending` until its outcome is recorded."""

    id: int
    event: str
    mail: str
    recipient: str
    due: float
    expires: float
    attempts: int
    message_id: str
    first_attempt: float | None = None


@dataclass(frozen=True)
class Narrow:
    """One mail of one event, or one recipient of it: what `mailer send` asks for."""

    event: str
    mail: str
    recipient: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One attempt's outcome and the state it leads to, written in one transaction."""

    delivery: int
    at: float
    verdict: str
    code: int | None
    reply: str
    state: DeliveryState
    attempts: int
    next_attempt: float | None = None


@dataclass(frozen=True)
class Version:
    """An event's valid version as kept in force (its texts, so that it can be parsed again
    while the file is invalid, across restarts too) and the plan that brings it in."""

    event_id: str
    source: str
    title: str
    digest: str
    toml: str
    csv: str | None
    mails: str  # JSON: name, due, expires, to
    plan: Plan | None = None  # None: the stored deliveries already match


@dataclass(frozen=True)
class EventRow:
    id: str
    source: str
    title: str
    digest: str | None  # of the last valid version; None if there never was one
    error: str | None
    removed: bool
    mails: str = "[]"


@dataclass(frozen=True)
class MailCounts:
    """One mail of one event as `mailer status` shows it."""

    event: str
    mail: str
    due: float
    expires: float
    counts: dict[str, int]
    problem: str | None = None  # a reply of a retrying or failed delivery: what went wrong


@dataclass(frozen=True)
class DeliveryRow:
    recipient: str
    state: str
    attempts: int
    last_reply: str | None
    sent_at: float | None
    due: float


class Store:
    """One connection, one writer at a time: every write goes through `transaction()`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        self._pending: list[tuple[Attempt, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating it and its folder if need be) and migrate; an unusable path is a
        configuration problem, said as one line naming the key."""

        def unusable(why: object) -> ConfigError:
            return ConfigError(f"cannot open the database {path}: {why}", key="paths.database")

        # Checked before connecting: aiosqlite's thread outlives a failed connect and
        # complains when the loop has closed.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unusable(exc.strerror) from exc
        if path.exists() and not path.is_file():
            raise unusable("it is not a file")
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            raise unusable(exc) from exc
        try:
            for pragma in PRAGMAS:
                await db.execute(pragma)
        except (OSError, aiosqlite.Error) as exc:  # not a database, a disk that is full
            await db.close()
            raise unusable(exc) from exc
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, one at a time: tasks share the connection, so an
        interleaved statement would otherwise land in another task's transaction."""
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone() or (0,)
        if version > len(MIGRATIONS):
            await self.db.close()
            raise ConfigError(
                f"the database is from a newer mailer (schema {version}; this "
                f"one knows up to {len(MIGRATIONS)}): upgrade mailer",
                key="paths.database",
            )
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            async with self.transaction() as db:
                for statement in statements:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock, self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # -- events ---------------------------------------------------------------------------

    async def events(self) -> dict[str, EventRow]:
        """Every event known, without the texts of its last valid version (megabytes at
        1,000 events, and needed only while a file is invalid: `last_valid`)."""
        rows = await self._rows(
            "SELECT id, source, title, digest, error, removed, mails FROM events"
        )
        return {row[0]: EventRow(*row[:5], removed=bool(row[5]), mails=row[6]) for row in rows}

    async def last_valid(self, event_id: str) -> tuple[str, str | None] | None:
        """The TOML and CSV text of an event's last valid version, if it had one."""
        rows = await self._rows(
            "SELECT toml, csv FROM events WHERE id = ? AND toml IS NOT NULL", (event_id,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def save_valid(self, versions: Sequence[Version], *, now: float) -> None:
        """Remember events' newest valid versions, in the transaction that applies their
        plans (one transaction for many events at start: a commit and a few round trips to
        aiosqlite's thread per batch, not per event)."""
        async with self.transaction() as db:
            await db.executemany(
                """INSERT INTO events (id, source, title, digest, toml, csv, mails, error,
                                       removed, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, ?)
                   ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                       title = excluded.title, digest = excluded.digest, toml = excluded.toml,
                       csv = excluded.csv, mails = excluded.mails, error = NULL, removed = 0,
                       updated_at = excluded.updated_at""",
                [
                    (v.event_id, v.source, v.title, v.digest, v.toml, v.csv, v.mails, now)
                    for v in versions
                ],
            )
            await _apply(db, [v.plan for v in versions if v.plan is not None])

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
                f"WHERE event = ? AND state IN {_PENDING_SQL}",
                (event_id,),
            )
            return cursor.rowcount

    async def plan(
        self, event_id: str, wanted: Sequence[Wanted], *, stored_before: bool = True
    ) -> Plan:
        """What it takes to make the stored deliveries match `wanted` (read, not applied).
        `stored_before=False`: an event without a row in `events` has no deliveries either
        (both are written in one transaction), so there is nothing to read."""
        rows = []
        if stored_before:
            rows = await self._rows(
                "SELECT id, mail, recipient, due, expires, state FROM deliveries WHERE event = ?",
                (event_id,),
            )

        def planned() -> Plan:
            stored = [Stored(r[0], r[1], r[2], r[3], r[4], DeliveryState(r[5])) for r in rows]
            return plan_event(event_id, wanted, stored)

        # A big event is planned in a thread (200,000 rows held the loop, and due mail, for
        # seconds); a small one here, where a hop to a thread would cost more than planning.
        if len(rows) + len(wanted) >= PLAN_IN_THREAD_FROM:
            return await asyncio.to_thread(planned)
        return planned()

    # -- the queue ------------------------------------------------------------------------

    async def reset_interrupted(self) -> int:
        """After a crash: deliveries caught `sending` go back to the queue (SPEC §5.3: only
        those in flight at the kill may be sent twice)."""
        async with self.transaction() as db:
            cursor = await db.execute(f"UPDATE deliveries SET {_REQUEUED} WHERE state = 'sending'")
            return cursor.rowcount

    async def release(self, ids: Sequence[int]) -> None:
        """Claimed but not sent (sending paused or stopping): back to the queue as they were."""
        async with self.transaction() as db:
            await db.executemany(
                f"UPDATE deliveries SET {_REQUEUED} WHERE id = ? AND state = 'sending'",
                [(i,) for i in ids],
            )

    async def next_due(self) -> float | None:
        rows = await self._rows(
            f"SELECT MIN(next_attempt) FROM deliveries WHERE state IN {_PENDING_SQL}"
        )
        return rows[0][0]

    async def claim_due(
        self, now: float, *, limit: int, only: Narrow | None = None
    ) -> tuple[list[Claimed], int]:
        """Take up to `limit` due deliveries for sending; expire those past their expiry.

        `only` narrows it to one mail, or one recipient of it (`mailer send`). Returns the
        claimed ones and how many expired.
        """
        params: dict[str, Any] = {"now": now, "limit": limit}
        narrow = ""
        if only is not None:
            params.update(event=only.event, mail=only.mail, recipient=only.recipient)
            narrow = " AND event = :event AND mail = :mail"
            narrow += " AND recipient = :recipient" if only.recipient else ""
        async with self.transaction() as db:
            expired = await db.execute(
                f"UPDATE deliveries SET state = 'expired', last_reply = 'expired before it "
                f"could be sent' WHERE id IN (SELECT id FROM deliveries WHERE state IN "
                f"{_PENDING_SQL} AND next_attempt <= :now AND expires <= :now{narrow})",
                params,
            )
            async with db.execute(
                f"UPDATE deliveries SET state = 'sending' WHERE id IN (SELECT id FROM deliveries "
                f"WHERE state IN {_PENDING_SQL} AND next_attempt <= :now{narrow} "
                f"ORDER BY next_attempt LIMIT :limit) "
                f"RETURNING id, event, mail, recipient, due, expires, attempts, message_id, "
                f"first_attempt",
                params,
            ) as cursor:
                # RETURNING comes in no particular order: earliest due first, as claimed.
                claimed = sorted(
                    (Claimed(*row) for row in await cursor.fetchall()), key=lambda c: (c.due, c.id)
                )
        return claimed, expired.rowcount

    async def record(self, attempt: Attempt) -> None:
        """Record an outcome durably; returns once it is committed.

        Outcomes that arrive while a commit is under way are committed together in the next
        one (group commit), so N sessions cost about one commit per round, not N.
        """
        done = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.record_now([attempt for attempt, _ in batch])
            except Exception as exc:  # every waiter learns that its outcome is not durable
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)

    async def record_now(self, attempts: Sequence[Attempt]) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO attempts (delivery, at, verdict, code, reply) VALUES (?, ?, ?, ?, ?)",
                [(a.delivery, a.at, a.verdict, a.code, a.reply) for a in attempts],
            )
            await db.executemany(
                "UPDATE deliveries SET state = :state, attempts = :attempts, "
                "last_reply = :reply, next_attempt = COALESCE(:next, next_attempt), "
                "first_attempt = COALESCE(first_attempt, :at), "
                "sent_at = CASE WHEN :state = 'sent' THEN :at ELSE sent_at END WHERE id = :id",
                [
                    {
                        "state": a.state.value,
                        "attempts": a.attempts,
                        "reply": a.reply,
                        "next": a.next_attempt,
                        "at": a.at,
                        "id": a.delivery,
                    }
                    for a in attempts
                ],
            )

    async def set_state(self, ids: Sequence[int], state: DeliveryState, *, reply: str) -> None:
        """End deliveries without an attempt (cancelled: the event no longer wants them)."""
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE deliveries SET state = ?, last_reply = ? WHERE id = ?",
                [(state.value, reply, i) for i in ids],
            )

    async def requeue(
        self,
        event_id: str,
        mail: str | None,
        *,
        states: Iterable[DeliveryState],
        now: float,
        recipient: str | None = None,
    ) -> int:
        """Put deliveries back in the queue now, as new: `mailer retry` and `mailer send`.

        Attempts start from zero again (their history stays in the attempt log), and an
        expiry that has passed gets an hour, since a person asked for this now.
        """
        names = [s.value for s in states]
        where = f"event = ? AND state IN ({', '.join('?' * len(names))})"
        params: list[Any] = [event_id, *names]
        for column, value in (("mail", mail), ("recipient", recipient)):
            if value is not None:
                where += f" AND {column} = ?"
                params.append(value)
        async with self.transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries SET state = 'scheduled', attempts = 0, first_attempt = NULL, "
                f"next_attempt = ?, expires = MAX(expires, ? + 3600) WHERE {where}",
                [now, now, *params],
            )
            return cursor.rowcount

    # -- status ---------------------------------------------------------------------------

    async def mail_counts(self, event_id: str | None = None) -> list[MailCounts]:
        """Counts per state for each mail (of one event, or all), in due order."""
        where, params = ("WHERE event = ?", (event_id,)) if event_id else ("", ())
        rows = await self._rows(
            f"SELECT event, mail, MIN(due), MAX(expires), state, COUNT(*) "
            f"FROM deliveries {where} GROUP BY event, mail, state",
            params,
        )
        # The newest attempt of a delivery that is retrying or failed (SQLite takes the bare
        # column from the row with the MAX).
        problems = await self._rows(
            f"SELECT d.event, d.mail, a.reply, MAX(a.at) FROM attempts a "
            f"JOIN deliveries d ON d.id = a.delivery "
            f"WHERE d.state IN ('retrying', 'failed'){' AND d.event = ?' if event_id else ''} "
            f"GROUP BY d.event, d.mail",
            params,
        )
        latest = {(event, mail): reply for event, mail, reply, _ in problems}
        found: dict[tuple[str, str], MailCounts] = {}
        for event, mail, due, expires, state, count in rows:
            item = found.setdefault(
                (event, mail),
                MailCounts(
                    event,
                    mail,
                    due,
                    expires,
                    dict.fromkeys(DeliveryState, 0),
                    problem=latest.get((event, mail)),
                ),
            )
            item.counts[DeliveryState(state)] = count
        return sorted(found.values(), key=lambda m: (m.event, m.due, m.mail))

    async def deliveries_of(self, event_id: str, mail: str) -> list[DeliveryRow]:
        rows = await self._rows(
            "SELECT recipient, state, attempts, last_reply, sent_at, due FROM deliveries "
            "WHERE event = ? AND mail = ? ORDER BY recipient",
            (event_id, mail),
        )
        return [DeliveryRow(*row) for row in rows]


async def _apply(db: aiosqlite.Connection, plans: Sequence[Plan]) -> None:
    """Write plans. Guarded by state, so a delivery claimed meanwhile is left as it is.

    Each statement is a round trip to aiosqlite's thread: the empty ones are skipped. The
    rows to insert (10,000 in a batch at start) are generated in that thread as SQLite takes
    them, not built first on the event loop.
    """
    pending = _PENDING_SQL
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


__all__ = [
    "PENDING",
    "Attempt",
    "Claimed",
    "DeliveryRow",
    "EventRow",
    "MailCounts",
    "Store",
    "Version",
]
