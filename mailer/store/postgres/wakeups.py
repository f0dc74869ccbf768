"""Wake-ups across nodes: `NOTIFY` in the transactions that change the plan or the queue,
`LISTEN` on a connection of its own (SPEC §9: a plan change, `mailer send` or `mailer retry`
is seen by every node within a second; the engine's poll stays as the fallback).

A notification is sent by PostgreSQL when its transaction commits, never before, and never
for one rolled back: a node woken always finds the change. Notifications sent while a
listener's connection was down are lost; the listener says "changed" once it is back, and
the poll covers the gap meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import psycopg

from mailer.store.leases import Node
from mailer.store.postgres.connection import Connection, Db, shown
from mailer.store.rows import Change

log = logging.getLogger("mailer")

# The channel every node of a database listens on (one database, one mailer).
CHANNEL = "mailer"
# After the listening connection fails, it is opened again after this many seconds, doubled
# up to the maximum: a database restart is noticed within seconds, and no busy loop.
RECONNECT_S = 1.0
RECONNECT_MAX_S = 30.0


async def announce(
    db: Db, node: Node, kind: str, *, event: str | None = None, source: str | None = None
) -> None:
    """Tell the other nodes, when the caller's transaction commits, what changed."""
    payload = {"node": node.token, "kind": kind, "event": event, "source": source}
    await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(payload)))


class Wakeups(Connection):
    """Listening for what other nodes changed."""

    async def listen(self, heard: Callable[[Change], None]) -> None:
        """Call `heard` for each change another node commits, until cancelled; a lost
        connection is opened again (said once per outage), then `heard` a bare change."""
        pause_s, down = RECONNECT_S, False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as db:
                    await db.execute(f"LISTEN {CHANNEL}")
                    if down:
                        log.warning("wake-ups from other nodes heard again")
                        heard(Change("changed"))  # what was said meanwhile is lost
                    pause_s, down = RECONNECT_S, False
                    async for note in db.notifies():
                        change = self._change_of(note.payload)
                        if change is not None:
                            heard(change)
            except (psycopg.Error, OSError) as exc:
                if not down:
                    log.warning(
                        "wake-ups from other nodes not heard (%s: %s); polling meanwhile",
                        shown(self.url),
                        str(exc).strip().replace("\n", " "),
                    )
                down = True
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, RECONNECT_MAX_S)

    def _change_of(self, payload: str) -> Change | None:
        """The change a notification names; None for our own, or one we cannot read."""
        try:
            note = json.loads(payload)
            if note["node"] == self.node.token:
                return None
            return Change(str(note["kind"]), event=note.get("event"), source=note.get("source"))
        except (ValueError, KeyError, TypeError):
            return None
