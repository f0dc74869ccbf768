"""The store in a PostgreSQL database through psycopg 3 (SPEC §9: several nodes, one
database).

The same contract as `mailer.store.sqlite`, module for module: `schema` (tables, migrations
under an advisory lock), `connection` (the pool, the one transaction helper), `queue`
(claims with `FOR UPDATE SKIP LOCKED`, leases, group commit), `versions` (the versions in
force), `reports` (status), `wakeups` (LISTEN/NOTIFY between nodes), `privacy`
(the secret, bounce notices, purges), `nodes` (the nodes and the planner's election).
Imported only when `paths.database` is a URL, so SQLite users never import psycopg.
"""

from __future__ import annotations

from mailer.store.contract import Store
from mailer.store.postgres.nodes import Nodes
from mailer.store.postgres.privacy import Privacy
from mailer.store.postgres.queue import Queue
from mailer.store.postgres.reports import Reports
from mailer.store.postgres.schema import MIGRATIONS
from mailer.store.postgres.versions import Versions
from mailer.store.postgres.wakeups import Wakeups


class PostgresStore(Queue, Versions, Reports, Nodes, Wakeups, Privacy, Store):
    """The contract (`mailer.store.contract.Store`) over a pool of PostgreSQL connections."""


__all__ = ["MIGRATIONS", "PostgresStore"]
