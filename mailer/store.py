"""Delivery state in SQLite through aiosqlite: the only module that speaks SQL.

The unique key on (event, mail, recipient) makes "sent twice" a constraint, not a hope.
WAL mode lets `status`, `check` and `preview` read while the service writes; in WAL mode
a committed transaction survives `kill -9` whatever `synchronous` says (FULL adds only
power-loss safety at ~5x the cost per commit, see MEASUREMENTS.md), so NORMAL it is.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    "PRAGMA foreign_keys = ON",
)
# Another process (a `mailer retry`, a backup) may hold the lock for a moment.
BUSY_TIMEOUT_S = 10.0
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
        self.path: Path | None = None
        self._identity: tuple[int, int] | None = None

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Store:
        """Open (creating it and its folder if need be) and migrate; an unusable path is a
        configuration problem, said as one line naming the key."""
        # Checked before connecting: aiosqlite's thread outlives a failed connect and
        # complains when the loop has closed.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unusable(path, exc.strerror) from exc
        if path.exists() and not path.is_file():
            raise _unusable(path, "it is not a file")
        store = await cls._connect(path, str(path), busy_timeout_s=busy_timeout_s)
        try:
            await store._migrate()
        except BaseException as exc:
            await store.db.close()
            if isinstance(exc, OSError | aiosqlite.Error):
                raise _unusable(path, exc) from exc
            raise
        return store

    @classmethod
    async def open_read_only(cls, path: Path) -> Store:
        """Open for `status`: never creates, migrates or writes (issue 19: a `status` that
        created the schema while a starting service did killed the service)."""
        if not path.is_file():
            raise _not_set_up(path)
        store = await cls._connect(path, f"{path.resolve().as_uri()}?mode=ro", read_only=True)
        try:
            version = await store._version()
        except (OSError, aiosqlite.Error) as exc:
            await store.db.close()
            raise _unusable(path, exc) from exc
        if version != len(MIGRATIONS):
            await store.db.close()
            if version == 0:  # empty: a service starting right now has not committed it yet
                raise _not_set_up(path)
            if version < len(MIGRATIONS):
                raise _unusable(
                    path,
                    f"it is of an older schema ({version}; this mailer uses "
                    f"{len(MIGRATIONS)}): `mailer run` upgrades it",
                )
            raise _newer(version)
        return store

    @classmethod
    async def _connect(
        cls,
        path: Path,
        target: str,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        read_only: bool = False,
    ) -> Store:
        try:
            db = await aiosqlite.connect(target, isolation_level=None, uri=read_only)
        except (OSError, aiosqlite.Error) as exc:
            raise _unusable(path, exc) from exc
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            for pragma in PRAGMAS[1:] if read_only else PRAGMAS:  # journal_mode writes
                await db.execute(pragma)
        except (OSError, aiosqlite.Error) as exc:  # not a database, a disk that is full
            await db.close()
            raise _unusable(path, exc) from exc
        store = cls(db)
        store.path = path
        store._identity = _identity(path)
        return store

    def ensure_same_file(self) -> None:
        """Raise `DatabaseGone` if the file opened is no longer at its path (deleted, or
        replaced by another): writing on would only go to a file nobody can see, and a
        restart would start afresh and send everything again (issue 11). One stat."""
        if self.path is not None and _identity(self.path) != self._identity:
            raise DatabaseGone(
                f"the database file {self.path} was deleted or replaced while the service "
                f"ran: sending stopped; restore it from a backup, or restart on purpose to "
                f"start afresh (everything not in the new database is sent again)",
                key="paths.database",
            )

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, one at a time: tasks share the connection, so an
        interleaved statement would otherwise land in another task's transaction.

        Every transaction ends, whatever is cancelled when: a task cancelled just after its
        BEGIN ran in aiosqlite's thread (but before it resumed) used to leave the connection
        inside a transaction, and every later BEGIN failed (issue 11). So BEGIN is inside
        the `try`, the rollback is shielded, and a transaction left over anyway is rolled
        back before the next BEGIN.
        """
        async with self._lock:
            if self.db.in_transaction:
                await self._rollback()
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                await self.db.execute("COMMIT")
            except BaseException:
                await asyncio.shield(self._rollback())
                raise

    async def _rollback(self) -> None:
        """Roll back if a transaction is open. Runs in aiosqlite's thread after anything
        queued before it (a BEGIN whose waiter was cancelled), so it cannot come too soon."""
        # None open is fine: BEGIN failed, or SQLite rolled back by itself (a full disk).
        with contextlib.suppress(aiosqlite.Error):
            await self.db.execute("ROLLBACK")

    async def _version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone() or (0,)
        return int(version)

    async def _migrate(self) -> None:
        """Create or migrate the schema in one transaction, the version read inside it:
        a second process (a `mailer send` started with the service) waits, then finds it
        done, instead of creating the tables a second time."""
        async with self.transaction() as db:
            version = await self._version()
            if version > len(MIGRATIONS):
                raise _newer(version)
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
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
                    if not done.done():  # a waiter cancelled (shutdown) wants no answer
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
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


class DatabaseGone(ConfigError):
    """The database file opened was deleted or replaced under the running service."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _unusable(path: Path, why: object) -> ConfigError:
    return ConfigError(f"cannot open the database {path}: {why}", key="paths.database")


def _not_set_up(path: Path) -> ConfigError:
    return ConfigError(
        f"no database at {path}: is the service set up? (mailer run creates it)",
        key="paths.database",
    )


def _newer(version: int) -> ConfigError:
    return ConfigError(
        f"the database is from a newer mailer (schema {version}; this "
        f"one knows up to {len(MIGRATIONS)}): upgrade mailer",
        key="paths.database",
    )


def is_damaged(exc: BaseException) -> bool:
    """A database that can never work again as it is (not a database, malformed, read-only):
    the service stops with one line rather than retrying forever."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_READONLY"))


__all__ = [
    "PENDING",
    "Attempt",
    "Claimed",
    "DatabaseGone",
    "DeliveryRow",
    "EventRow",
    "MailCounts",
    "Store",
    "Version",
]
