"""The store's contract: every operation the engine, catalog, commands and status need.

Two implementations: `mailer.store.sqlite` (the embedded default) and
`mailer.store.postgres` (several nodes, SPEC §9), chosen by `open_store` from
`paths.database` (a file or a `postgresql://` URL), and tested by the same suite
(tests/test_store_contract.py). The store stores and answers; it does not plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from mailer.delivery import DeliveryState
from mailer.plan import Stored, Wanted
from mailer.store.leases import Node
from mailer.store.rows import (
    Attempt,
    Bounce,
    CalendarRow,
    Change,
    Claimed,
    DeliveryRow,
    EventCounts,
    EventRow,
    MailCounts,
    Narrow,
    NodeRow,
    Purged,
    Version,
)


class Store(Protocol):
    """Delivery state and the versions of events in force, shared by every process."""

    node: Node  # who this store's claims are leased to

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_s: float = 10.0) -> Store:
        """Open the database `paths.database` names, creating and migrating it; an unusable
        one is a `ConfigError` naming the key. Each implementation opens its own kind of
        address; `open_store` chooses the implementation (a URL too: a `Path` cannot hold
        one, "postgresql://h" would become "postgresql:/h")."""
        return await open_store(path, busy_timeout_s=busy_timeout_s)

    @classmethod
    async def open_read_only(cls, path: Path) -> Store:
        """Open for `mailer status`: never creates, migrates or writes."""
        return await open_read_only(path)

    def ensure_same_file(self) -> None:
        """Raise `DatabaseGone` if the database opened is no longer the one configured (a
        SQLite file deleted or replaced; nothing to check on a server)."""
        ...

    async def close(self) -> None:
        """After every outcome handed to `record` is committed (or has failed)."""
        ...

    # -- the versions in force ------------------------------------------------------------

    async def events(self) -> dict[str, EventRow]:
        """Every event known, without the texts of its last valid version."""
        ...

    async def last_valid(self, event_id: str) -> tuple[str, str | None] | None:
        """The TOML and CSV text of an event's last valid version, if it had one."""
        ...

    async def event_files(self, event_id: str) -> dict[str, bytes]:
        """The attachments of an event's last valid version as they were checked, by name
        (empty for a version saved before they were stored: then the folder's are used)."""
        ...

    async def stored_deliveries(self, event_id: str) -> list[Stored]:
        """Every delivery of an event, in any state: what planning compares a version with."""
        ...

    async def save_valid(
        self, versions: Sequence[Version], *, now: float, settle_s: float = 0.0
    ) -> None:
        """Keep events' newest valid versions (their attachments too, each content once) and
        apply their plans, all in one transaction. The plan's changes leave a delivery being
        sent (or ended) as it is. Calendar facts that differ from those announced wait until
        `now + settle_s` (SPEC §10)."""
        ...

    # -- calendar identity (SPEC §10) -----------------------------------------------------

    async def calendar(self, event_id: str) -> CalendarRow | None:
        """The event's SEQUENCE and the facts announced (and waiting), if it has a row."""
        ...

    async def settled(self, now: float) -> list[CalendarRow]:
        """The changes waiting whose settling time has come."""
        ...

    async def recipients_told(
        self, event_id: str, mails: Sequence[str] | None, *, recipient: str | None = None
    ) -> list[str]:
        """Who was sent any of these mails of the event (any mail if None)."""
        ...

    async def announce(self, row: CalendarRow, notices: Sequence[Wanted]) -> bool:
        """SEQUENCE + 1 with the change in force and its notices queued, in one transaction;
        False if the row changed since it was read (nothing done)."""
        ...

    async def save_stamps(self, stamps: Sequence[tuple[str, str, str]]) -> None:
        """Keep (event, plan digest, stamp): its files' metadata, found unchanged by a read
        at start (file_stamps.py); kept only if that version is still the one in force."""
        ...

    async def save_error(self, event_id: str, *, source: str, error: str, now: float) -> None:
        """Mark the file invalid; the last valid version (and its deliveries) stays in force."""
        ...

    async def remove_event(self, event_id: str, *, now: float) -> int:
        """The file is gone: cancel what has not gone out (how many), keep the history."""
        ...

    # -- the queue ------------------------------------------------------------------------

    async def next_due(self) -> float | None:
        """When the earliest delivery waiting in the queue is due (unix seconds)."""
        ...

    async def oldest_due(self, now: float) -> float | None:
        """The due time of the oldest delivery due by `now` and not yet ended (waiting,
        retrying or being sent): how late sending runs (/metrics, SPEC §12)."""
        ...

    async def claim_due(
        self, now: float, *, limit: int, only: Narrow | None = None
    ) -> tuple[list[Claimed], int]:
        """Lease up to `limit` due deliveries to this node (its `lease_s` from `now`),
        earliest due first, never one to two nodes; take back deliveries whose lease ran out
        (never this node's own); expire those past their expiry. Returns the claimed ones
        and how many expired. `only`: one mail, or one recipient of it (`mailer send`)."""
        ...

    async def renew_leases(self, now: float) -> int:
        """This node lives: every lease it holds now runs to `now + lease_s`. How many."""
        ...

    async def take_back_abandoned(self, now: float) -> int:
        """At start: what stopped nodes held (lease run out, or known dead) back to the
        queue; how many. A live node's leases stay its own."""
        ...

    async def release(self, ids: Sequence[int]) -> None:
        """Claimed but not sent: back to the queue as they were, if still leased to us."""
        ...

    async def release_held(self) -> int:
        """Everything still leased to this node back to the queue, as it was; how many. For
        a node that holds nothing it knows of, after the database failed it: a claim whose
        commit went through but whose answer was lost left rows leased to us that no
        session sends, and that no other node takes while we renew our leases."""
        ...

    async def record(self, attempt: Attempt) -> None:
        """Record an outcome durably: returns only once it is committed (group commit)."""
        ...

    async def record_now(self, attempts: Sequence[Attempt]) -> None:
        """Record outcomes in one transaction, now (what a failed step left over)."""
        ...

    async def set_state(self, ids: Sequence[int], state: DeliveryState, *, reply: str) -> None:
        """End deliveries without an attempt (cancelled: the event no longer wants them)."""
        ...

    async def requeue(
        self,
        event_id: str,
        mail: str | None,
        *,
        states: Iterable[DeliveryState],
        now: float,
        recipient: str | None = None,
    ) -> int:
        """Back in the queue now, as new (`mailer retry`, `mailer send`); how many."""
        ...

    # -- nodes (SPEC §9) ---------------------------------------------------------------------

    async def beat(self, now: float, *, planner: bool) -> None:
        """This node lives: its row in `nodes` says so (written at its first beat), and
        whether it is the planner; if it is, no other row says so any more. Rows not heard
        of for NODE_FORGOTTEN_S go."""
        ...

    async def leave(self) -> None:
        """This node stops: its row goes (a node killed leaves it, shown as not seen)."""
        ...

    async def nodes(self) -> list[NodeRow]:
        """Every node the database knows of, by start."""
        ...

    async def hold_planner(self) -> bool:
        """Become the planner if no other node is, or stay it: whether this node is. On
        SQLite, the one node is; on PostgreSQL, the holder of an advisory lock that the
        server releases when the holder's connection dies."""
        ...

    async def reserve_turn(self, now: float, *, interval_s: float) -> float:
        """The instant (unix seconds, not before `now`) at which one more message may leave
        so that every process on this database together sends one per `interval_s`, and
        that turn reserved (`max_per_minute`, SPEC §9). A turn more than TURN_AHEAD_MAX_S
        ahead is taken for a clock set back, and the turns start again from `now`."""
        ...

    # -- other nodes ----------------------------------------------------------------------

    async def listen(self, heard: Callable[[Change], None]) -> None:
        """Call `heard` for each change another node commits, until cancelled (PostgreSQL's
        LISTEN/NOTIFY). SQLite hears nothing: its other processes are found by the poll."""
        ...

    # -- reports --------------------------------------------------------------------------

    async def state_counts(self) -> dict[DeliveryState, int]:
        """How many deliveries are in each state, all events together (/metrics): one
        scan, where `mail_counts` also reads each mail's newest problem."""
        ...

    async def mail_counts(self, event_id: str | None = None) -> list[MailCounts]:
        """Counts per state for each mail (of one event, or all), in due order."""
        ...

    async def deliveries_of(self, event_id: str, mail: str) -> list[DeliveryRow]:
        """Each delivery of one mail, by recipient."""
        ...

    async def event_counts(self) -> dict[str, EventCounts]:
        """Per event: counts per state and the next due time of what still waits (the
        organisers' events page). One scan without the problem replies `mail_counts` joins:
        the page stays fast at a thousand events."""
        ...

    # -- bounces and personal data (SPEC §11, §13) ----------------------------------------

    async def secret(self) -> bytes:
        """The secret `keyring.Keyring` derives its keys from: made (random) by the first
        process that asks, the same for every process and node after."""
        ...

    async def record_bounce(self, bounce: Bounce) -> str:
        """Record a bounce notice: "recorded" (a 5.x.x one bounces its delivery if it was
        sent; a 4.x.x one is an attempt in the log, nothing more), "seen" (this notice was
        recorded before: a restart read it again) or "unknown" (no such delivery)."""
        ...

    async def purge(
        self, *, now: float, keep_s: float, erase: Callable[[str], str], dry_run: bool = False
    ) -> Purged:
        """Erase the personal data of each event that ended (or was deleted) `keep_s` before
        `now` and has nothing left to send: addresses become `erase(address)`, and texts,
        Message-IDs and replies go; the counts per mail and state stay. `dry_run`: what
        would be erased, with nothing changed."""
        ...


# Turns are reserved at most this far ahead: further means a wall clock set back (or more
# sessions waiting than max_per_minute allows in five minutes), and waiting for it would
# stall sending as long.
TURN_AHEAD_MAX_S = 300.0

# The URL schemes libpq's URI form takes: such a `paths.database` is a PostgreSQL database.
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def is_url(database: Path | str) -> bool:
    """A PostgreSQL URL rather than a file (a `Path` never is: it folds "//" into "/")."""
    return isinstance(database, str) and database.startswith(POSTGRESQL_SCHEMES)


async def open_store(
    database: Path | str, *, busy_timeout_s: float = 10.0, node: Node | None = None
) -> Store:
    """The store `paths.database` calls for: a `postgresql://` URL (SPEC §9) or a SQLite file.
    The implementation is imported here, when chosen: SQLite users never import psycopg.
    `node`: who claims through it (this process, with the default lease, if None)."""
    if is_url(database):
        from mailer.store.postgres import PostgresStore

        return await PostgresStore.open(str(database), busy_timeout_s=busy_timeout_s, node=node)
    from mailer.store.sqlite import SqliteStore  # the implementations import this module

    return await SqliteStore.open(Path(database), busy_timeout_s=busy_timeout_s, node=node)


async def open_read_only(database: Path | str) -> Store:
    """As `open_store`, for `mailer status`: never creates, migrates or writes."""
    if is_url(database):
        from mailer.store.postgres import PostgresStore

        return await PostgresStore.open_read_only(str(database))
    from mailer.store.sqlite import SqliteStore

    return await SqliteStore.open_read_only(Path(database))
