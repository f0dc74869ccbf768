"""One aiosqlite connection: opening it, the one transaction helper, and its failures.

Every write goes through `transaction()`; pragmas and migrations are set in `schema.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from mailer.errors import ConfigError
from mailer.store.leases import Node
from mailer.store.rows import DatabaseGone, StoreFault, StoreUnavailable
from mailer.store.sqlite.schema import (
    MIGRATIONS,
    PRAGMAS,
    WRITING_PRAGMAS,
    migrate,
    newer_schema,
    version_of,
)

# Another process (a `mailer retry`, a backup) may hold the lock for a moment.
BUSY_TIMEOUT_S = 10.0


class Connection:
    """One connection, one writer at a time: tasks share it, so every write takes the lock."""

    def __init__(self, db: aiosqlite.Connection, *, path: Path, node: Node) -> None:
        self.db = db
        self.path = path
        self.node = node
        self._lock = asyncio.Lock()
        self._identity = _identity(path)

    @classmethod
    async def open(
        cls, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S, node: Node | None = None
    ) -> Self:
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
        db = await _connect(path, str(path), busy_timeout_s=busy_timeout_s)
        store = cls(db, path=path, node=node or Node.here())
        try:
            async with store.transaction() as tx:
                await migrate(tx)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, OSError | aiosqlite.Error | StoreUnavailable):
                raise _unusable(path, exc) from exc
            raise
        return store

    @classmethod
    async def open_read_only(cls, path: Path) -> Self:
        """Open for `status`: never creates, migrates or writes (issue 19: a `status` that
        created the schema while a starting service did killed the service)."""
        if not path.is_file():
            raise _not_set_up(path)
        db = await _connect(path, f"{path.resolve().as_uri()}?mode=ro", read_only=True)
        try:
            version = await version_of(db)
        except (OSError, aiosqlite.Error) as exc:
            await db.close()
            raise _unusable(path, exc) from exc
        if version != len(MIGRATIONS):
            await db.close()
            if version == 0:  # empty: a service starting right now has not committed it yet
                raise _not_set_up(path)
            if version < len(MIGRATIONS):
                raise _unusable(
                    path,
                    f"it is of an older schema ({version}; this mailer uses "
                    f"{len(MIGRATIONS)}): `mailer run` upgrades it",
                )
            raise newer_schema(version)
        return cls(db, path=path, node=Node.here())

    def ensure_same_file(self) -> None:
        """Raise `DatabaseGone` if the file opened is no longer at its path (deleted, or
        replaced by another): writing on would only go to a file nobody can see, and a
        restart would start afresh and send everything again (issue 11). One stat."""
        if _identity(self.path) != self._identity:
            raise DatabaseGone(
                f"the database file {self.path} was deleted or replaced while the service "
                f"ran: sending stopped; restore it from a backup, or restart on purpose to "
                f"start afresh (everything not in the new database is sent again)",
                key="paths.database",
            )

    async def close(self) -> None:
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
            except BaseException as exc:
                await asyncio.shield(self._rollback())
                if (fault := unavailable(exc)) is not None:
                    raise fault from exc
                raise

    async def _rollback(self) -> None:
        """Roll back if a transaction is open. Runs in aiosqlite's thread after anything
        queued before it (a BEGIN whose waiter was cancelled), so it cannot come too soon."""
        # None open is fine: BEGIN failed, or SQLite rolled back by itself (a full disk).
        with contextlib.suppress(aiosqlite.Error):
            await self.db.execute("ROLLBACK")

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        try:
            async with self._lock, self.db.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except aiosqlite.Error as exc:
            if (fault := unavailable(exc)) is not None:
                raise fault from exc
            raise


async def _connect(
    path: Path, target: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, read_only: bool = False
) -> aiosqlite.Connection:
    try:
        db = await aiosqlite.connect(target, isolation_level=None, uri=read_only)
    except (OSError, aiosqlite.Error) as exc:
        raise _unusable(path, exc) from exc
    try:
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        for pragma in PRAGMAS[WRITING_PRAGMAS:] if read_only else PRAGMAS:
            await _execute_when_free(db, pragma, busy_timeout_s=busy_timeout_s)
    except (OSError, aiosqlite.Error) as exc:  # not a database, a disk that is full
        await db.close()
        raise _unusable(path, exc) from exc
    return db


async def _execute_when_free(
    db: aiosqlite.Connection, pragma: str, *, busy_timeout_s: float
) -> None:
    """A pragma, waiting out a lock as busy_timeout would: switching a new database to WAL
    answers "database is locked" at once, without the busy handler, while another process
    opens it too (two nodes, or `status` beside a starting service)."""
    deadline = asyncio.get_running_loop().time() + busy_timeout_s
    while True:
        try:
            await db.execute(pragma)
            return
        except aiosqlite.OperationalError as exc:
            locked = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED")
            if not locked or asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.02)


# SQLite's result codes (sqlite_errorname, extended codes by prefix) by the kind of fault
# the contract names; any other OperationalError is the database failing us for now.
_FAULTS = (
    (("SQLITE_BUSY", "SQLITE_LOCKED"), StoreFault.LOCKED),
    (("SQLITE_FULL",), StoreFault.FULL),
    (("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_READONLY"), StoreFault.DAMAGED),
)


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The contract's error for a failure of the database itself; None for anything else
    (a constraint or a misused API is a bug, and keeps its own type and traceback)."""
    if not isinstance(exc, aiosqlite.OperationalError) and type(exc) is not aiosqlite.DatabaseError:
        return None
    name = getattr(exc, "sqlite_errorname", "")
    kind = next((k for names, k in _FAULTS if name.startswith(names)), StoreFault.GONE)
    return StoreUnavailable(kind, str(exc))


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
