"""The nodes in PostgreSQL and the planner's election (SPEC §9: one planner at a time).

The planner is the node holding a session-level advisory lock on a connection of its own,
outside the pool: PostgreSQL releases it when that connection ends, so a node killed, or
cut off from the server, stops being the planner without saying so, and the next node to
ask gets the lock. A node SIGSTOPped keeps its connection, and so the lock, until it runs
again or the server drops the connection.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from mailer.store.leases import NODE_FORGOTTEN_S, Node
from mailer.store.postgres.connection import POOL_WAIT_S, Connection, Db, unavailable
from mailer.store.postgres.schema import PLANNER_LOCK
from mailer.store.rows import NodeRow


class Nodes(Connection):
    """This node's row in `nodes`, every node's for `status`, and the election."""

    def __init__(self, pool: AsyncConnectionPool[Db], *, url: str, node: Node) -> None:
        super().__init__(pool, url=url, node=node)
        self._election: psycopg.AsyncConnection[Any] | None = None
        self._holds_lock = False

    async def close(self) -> None:
        await self._end_election()
        await super().close()

    async def beat(self, now: float, *, planner: bool) -> None:
        params = {
            "id": self.node.id,
            "host": self.node.host,
            "pid": self.node.pid,
            "now": now,
            "planner": planner,
            "forgotten": now - NODE_FORGOTTEN_S,
        }
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO nodes (id, host, pid, started, last_seen, planner) "
                "VALUES (%(id)s, %(host)s, %(pid)s, %(now)s, %(now)s, %(planner)s) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = %(now)s, planner = %(planner)s",
                params,
            )
            if planner:
                await db.execute(
                    "UPDATE nodes SET planner = FALSE WHERE id <> %(id)s AND planner", params
                )
            await db.execute("DELETE FROM nodes WHERE last_seen < %(forgotten)s", params)

    async def leave(self) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM nodes WHERE id = %s", (self.node.id,))

    async def nodes(self) -> list[NodeRow]:
        rows = await self._rows(
            "SELECT id, host, pid, started, last_seen, planner FROM nodes ORDER BY started, id"
        )
        return [NodeRow(*row) for row in rows]

    async def hold_planner(self) -> bool:
        """Take the planner's lock if it is free, or check that our connection holding it
        still lives. A connection that failed ends, and with it the lock (if the server is
        there, it has released it already): the failure is raised, and we plan no more."""
        try:
            if self._election is None or self._election.closed:
                self._holds_lock = False
                self._election = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=max(int(POOL_WAIT_S), 2)
                )
            if self._holds_lock:
                await self._election.execute("SELECT 1")
            else:
                cursor = await self._election.execute(
                    "SELECT pg_try_advisory_lock(%s)", (PLANNER_LOCK,)
                )
                row = await cursor.fetchone()
                self._holds_lock = bool(row and row[0])
        except psycopg.Error as exc:
            await self._end_election()
            if (fault := unavailable(exc)) is not None:
                raise fault from exc
            raise
        return self._holds_lock

    async def _end_election(self) -> None:
        """Close the election's connection: the server releases the lock if we held it."""
        election, self._election, self._holds_lock = self._election, None, False
        if election is not None:
            with contextlib.suppress(psycopg.Error):  # broken already: closed is what we want
                await election.close()
