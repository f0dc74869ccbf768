"""The store in one SQLite file through aiosqlite (the embedded default).

The unique key on (event, mail, recipient) makes "sent twice" a constraint, not a hope.
One connection per process; each responsibility in its own module: `schema` (tables,
migrations, pragmas), `connection` (opening, the one transaction helper), `queue` (claims,
leases, group commit), `versions` (the versions in force), `reports` (status), `privacy`
(the secret, bounce notices, purges: SPEC §11, §13), `nodes` (the one node, which plans).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailer.store.contract import Store
from mailer.store.rows import Change
from mailer.store.sqlite.connection import BUSY_TIMEOUT_S
from mailer.store.sqlite.nodes import Nodes
from mailer.store.sqlite.privacy import Privacy
from mailer.store.sqlite.queue import Queue
from mailer.store.sqlite.reports import Reports
from mailer.store.sqlite.schema import MIGRATIONS
from mailer.store.sqlite.versions import Versions


class SqliteStore(Queue, Versions, Reports, Privacy, Nodes, Store):
    """The contract (`mailer.store.contract.Store`) over one SQLite connection."""

    async def listen(self, heard: Callable[[Change], None]) -> None:
        """Nothing to hear: SQLite cannot tell one process what another wrote (the engine's
        poll finds it). Waits until cancelled, as PostgreSQL's listener does."""
        await asyncio.Future()


__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "SqliteStore"]
