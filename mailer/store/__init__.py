"""Delivery state and the versions of events in force: the only package that speaks SQL.

`Store` is the contract (`contract.py`); `open_store` gives the implementation that
`paths.database` calls for (a file: SQLite, `sqlite/`; a `postgresql://` URL: PostgreSQL,
`postgres/`, imported only then). Leases (SPEC §9) are in `leases.py`, the
values the store takes and gives in `rows.py`.
"""

from mailer.delivery import PENDING
from mailer.store.contract import Store, is_url, open_read_only, open_store
from mailer.store.leases import HEARTBEAT_S, LEASE_S, Node
from mailer.store.rows import (
    Attempt,
    Bounce,
    Change,
    Claimed,
    DatabaseGone,
    DeliveryRow,
    EventCounts,
    EventRow,
    File,
    MailCounts,
    Narrow,
    NodeRow,
    Purged,
    StoreFault,
    StoreUnavailable,
    Version,
    is_damaged,
)
from mailer.store.sqlite import MIGRATIONS, SqliteStore

__all__ = [
    "HEARTBEAT_S",
    "LEASE_S",
    "MIGRATIONS",
    "PENDING",
    "Attempt",
    "Bounce",
    "Change",
    "Claimed",
    "DatabaseGone",
    "DeliveryRow",
    "EventCounts",
    "EventRow",
    "File",
    "MailCounts",
    "Narrow",
    "Node",
    "NodeRow",
    "Purged",
    "SqliteStore",
    "Store",
    "StoreFault",
    "StoreUnavailable",
    "Version",
    "is_damaged",
    "is_url",
    "open_read_only",
    "open_store",
]
