"""A pool of psycopg connections to one PostgreSQL database: opening it, the one
transaction helper, and its failures.

Unlike SQLite's one connection behind a lock, the pool lets a claim, a lease renewal and a
commit of outcomes run at once; PostgreSQL's row locks, not ours, keep them apart.
Connections are in autocommit mode, so every write is one explicit `transaction()` and
every read sees what is committed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from mailer.errors import ConfigError
from mailer.store.leases import Node
from mailer.store.postgres.schema import MIGRATIONS, migrate, newer_schema, version_of
from mailer.store.rows import StoreFault, StoreUnavailable

# How long a write waits for a row another node holds (SQLite's busy timeout, in spirit).
LOCK_TIMEOUT_S = 10.0
# Enough for a claim, a renewal and a group commit at once; PostgreSQL counts connections.
POOL_SIZE = 4
# How long a store call waits for a connection of the pool before the database counts as
# gone for now (the server stopped): short enough that the node pauses and says so soon
# (a failed step makes a few such calls in a row), rather than hanging every session for
# psycopg_pool's default 30 s; long enough for a busy pool's turn (a few ms).
POOL_WAIT_S = 3.0
# How long the pool keeps trying to replace a broken connection before it gives up until
# the next call asks for one. Its tries back off (1 s, 2 s, 4 s, ...): left at its default
# of 5 minutes, a node found the restarted server up to a minute late.
RECONNECT_S = 3.0

Db = AsyncConnection[tuple[Any, ...]]


class Connection:
    """A pool of connections to the database `url` names, all leased to one node."""

    def __init__(self, pool: AsyncConnectionPool[Db], *, url: str, node: Node) -> None:
        self.pool = pool
        self.url = url
        self.node = node

    @classmethod
    async def open(
        cls,
        database: Path | str,
        *,
        busy_timeout_s: float = LOCK_TIMEOUT_S,
        node: Node | None = None,
    ) -> Self:
        """Connect, create or migrate the schema (one transaction, under an advisory lock),
        then open the pool. A database that cannot be reached or used is a configuration
        problem said in one line naming the key (a wrong password too: never an empty
        status)."""
        url = str(database)
        try:
            async with (
                await psycopg.AsyncConnection.connect(url, autocommit=True) as db,
                db.transaction(),
            ):
                await migrate(db)
        except psycopg.Error as exc:
            raise _unusable(url, exc) from exc
        timeout_ms = int(busy_timeout_s * 1000)
        return await cls._pooled(url, node or Node.here(), f"SET lock_timeout = {timeout_ms}")

    @classmethod
    async def open_read_only(cls, database: Path | str) -> Self:
        """Open for `status`: never creates, migrates or writes; every transaction of the
        session is read-only (`default_transaction_read_only`), so a slip cannot write."""
        url = str(database)
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
                version = await version_of(db)
        except psycopg.Error as exc:
            raise _unusable(url, exc) from exc
        if version != len(MIGRATIONS):
            if not version:  # none, or a node starting right now has not committed it yet
                raise ConfigError(
                    f"no database at {shown(url)}: is the service set up? (mailer run creates it)",
                    key="paths.database",
                )
            if version < len(MIGRATIONS):
                raise _unusable(
                    url,
                    f"it is of an older schema ({version}; this mailer uses "
                    f"{len(MIGRATIONS)}): `mailer run` upgrades it",
                )
            raise newer_schema(version)
        return await cls._pooled(url, Node.here(), "SET default_transaction_read_only = on")

    @classmethod
    async def _pooled(cls, url: str, node: Node, setting: str) -> Self:
        # A node frozen (SIGSTOP, a VM paused) inside a transaction would hold its row locks,
        # and so its claims, for as long as it is frozen: SKIP LOCKED passes them by. The
        # server ends such a session once it has idled in a transaction for a lease, and
        # its claims go to another node as the lease says (our transactions take ms).
        idle_ms = int(node.lease_s * 1000)

        async def configure(db: Db) -> None:
            await db.execute(setting)
            await db.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")

        pool: AsyncConnectionPool[Db] = AsyncConnectionPool(
            url,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            configure=configure,
            # Each connection is tried before it is lent: after the server restarted, every
            # idle one is dead, and a step would fail once for each of them.
            check=AsyncConnectionPool.check_connection,
            timeout=POOL_WAIT_S,
            reconnect_timeout=RECONNECT_S,
            name="mailer",
        )
        try:
            await pool.open(wait=True, timeout=LOCK_TIMEOUT_S)
        except Exception as exc:  # the database went away between the two connects
            await pool.close()
            raise _unusable(url, exc) from exc
        return cls(pool, url=url, node=node)

    def ensure_same_file(self) -> None:
        """Nothing to check: a server's database cannot be deleted from under an open
        connection unnoticed (DROP DATABASE refuses while we are connected)."""

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        """One transaction on a connection of the pool: committed when the block ends,
        rolled back if it raises (or is cancelled). The database failing is said as the
        contract's `StoreUnavailable`."""
        try:
            async with self.pool.connection() as db, db.transaction():
                yield db
        except psycopg.Error as exc:
            if (fault := unavailable(exc)) is not None:
                raise fault from exc
            raise

    async def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        try:
            async with self.pool.connection() as db:
                cursor = await db.execute(sql, params)
                return list(await cursor.fetchall())
        except psycopg.Error as exc:
            if (fault := unavailable(exc)) is not None:
                raise fault from exc
            raise


# SQLSTATEs by the kind of fault the contract names; any other OperationalError (a broken
# connection, a server shutting down or starting, no connection in time) is the database
# gone for now.
_FAULTS = {
    "55P03": StoreFault.LOCKED,  # lock_not_available: lock_timeout ran out
    "40P01": StoreFault.LOCKED,  # deadlock_detected
    "53100": StoreFault.FULL,  # disk_full
    "XX001": StoreFault.DAMAGED,  # data_corrupted
    "XX002": StoreFault.DAMAGED,  # index_corrupted
}


def unavailable(exc: psycopg.Error) -> StoreUnavailable | None:
    """The contract's error for a failure of the database itself; None for anything else
    (a constraint or bad SQL is a bug, and keeps its own type and traceback). A read-only
    server (a standby, before failover) is gone for now, not damaged."""
    state = exc.sqlstate or ""
    if state in _FAULTS:
        kind = _FAULTS[state]
    elif isinstance(exc, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction):
        kind = StoreFault.GONE
    else:
        return None
    return StoreUnavailable(kind, str(exc).strip().replace("\n", " "))


def shown(url: str) -> str:
    """The URL as messages show it: without a password, should one be in it."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1@", url)


def _unusable(url: str, why: object) -> ConfigError:
    text = str(why).strip().replace("\n", " ")
    return ConfigError(f"cannot open the database {shown(url)}: {text}", key="paths.database")
