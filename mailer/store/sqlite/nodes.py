"""The nodes in SQLite: the one `mailer run` of a file, and it plans (SPEC §9 is for
PostgreSQL; a SQLite file has one service, so no election)."""

from __future__ import annotations

from mailer.store.leases import NODE_FORGOTTEN_S
from mailer.store.rows import NodeRow
from mailer.store.sqlite.connection import Connection


class Nodes(Connection):
    """This node's row in `nodes`, and every node's for `status`."""

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
                "VALUES (:id, :host, :pid, :now, :now, :planner) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = :now, planner = :planner",
                params,
            )
            if planner:
                await db.execute("UPDATE nodes SET planner = 0 WHERE id <> :id AND planner", params)
            await db.execute("DELETE FROM nodes WHERE last_seen < :forgotten", params)

    async def leave(self) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM nodes WHERE id = ?", (self.node.id,))

    async def nodes(self) -> list[NodeRow]:
        rows = await self._rows(
            "SELECT id, host, pid, started, last_seen, planner FROM nodes ORDER BY started, id"
        )
        return [NodeRow(i, h, p, s, seen, bool(planner)) for i, h, p, s, seen, planner in rows]

    async def hold_planner(self) -> bool:
        """The one node of a SQLite file plans: always."""
        return True
