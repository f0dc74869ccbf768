"""The store contract (mailer/store/contract.py), written once and run against every
implementation: the versions in force, the plan applied, the queue under leases, group
commit, reports and migrations. A new store is one more entry in BACKENDS (huey's
tests/test_storage.py); this is the only place store behaviour is tested.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import psycopg
import pytest

from mailer.delivery import DeliveryState as S
from mailer.errors import ConfigError
from mailer.keyring import Keyring
from mailer.plan import Wanted, plan_event
from mailer.store import (
    LEASE_S,
    Attempt,
    Bounce,
    File,
    Narrow,
    Node,
    Store,
    StoreUnavailable,
    Version,
)
from mailer.store.contract import open_read_only, open_store
from mailer.store.leases import NODE_FORGOTTEN_S
from mailer.store.postgres import MIGRATIONS as PG_MIGRATIONS
from mailer.store.postgres import PostgresStore
from mailer.store.sqlite import MIGRATIONS, SqliteStore

# What every database of an older schema holds: one event, a sent delivery and one caught
# `sending` by a crash.
OLD_EVENT = (
    "INSERT INTO events (id, source, title, updated_at) VALUES ('e', 'e.toml', 'Förlabb', 0)"
)
OLD_DELIVERIES = (
    "INSERT INTO deliveries (event, mail, recipient, due, expires, state, attempts, "
    "next_attempt, message_id) VALUES ('e', 'm', 'a', 1, 9e9, 'sent', 1, 1, '<a>'), "
    "('e', 'm', 'b', 1, 9e9, 'sending', 1, 1, '<b>')"
)


class Backend(Protocol):
    schema_versions: int
    address: Path | str  # what `paths.database` says

    async def open(self, *, node: Node | None = None) -> Store: ...

    async def build_at(self, version: int) -> None: ...

    async def schema_version(self) -> int: ...


class SqliteBackend:
    """A fresh SQLite file under tmp_path; every `open` is another connection, another node."""

    schema_versions = len(MIGRATIONS)

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.path = tmp_path / "mailer.sqlite3"
        self.address: Path | str = self.path

    async def open(self, *, node: Node | None = None) -> Store:
        return await SqliteStore.open(self.path, node=node)

    async def build_at(self, version: int) -> None:
        """A database as the mailer of schema `version` left it."""
        self.path.unlink(missing_ok=True)
        with sqlite3.connect(self.path) as db:
            for statements in MIGRATIONS[:version]:
                for statement in statements:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute(OLD_EVENT)
            db.execute(OLD_DELIVERIES)

    async def schema_version(self) -> int:
        with sqlite3.connect(self.path) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])


class PostgresBackend:
    """A new empty database on the test run's PostgreSQL server (tests/conftest.py:
    `fresh_database`); every `open` is another pool, another node."""

    schema_versions = len(PG_MIGRATIONS)

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.url: str = request.getfixturevalue("fresh_database")
        self.address: Path | str = self.url

    async def open(self, *, node: Node | None = None) -> Store:
        return await PostgresStore.open(self.url, node=node)

    async def build_at(self, version: int) -> None:
        """A database as the mailer of schema `version` left it."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as db:
            await db.execute("DROP SCHEMA public CASCADE")
            await db.execute("CREATE SCHEMA public")
            for statements in PG_MIGRATIONS[:version]:
                for statement in statements:
                    await db.execute(statement)
            await db.execute("CREATE TABLE mailer_schema (version INTEGER NOT NULL)")
            await db.execute("INSERT INTO mailer_schema VALUES (%s)", (version,))
            await db.execute(OLD_EVENT)
            await db.execute(OLD_DELIVERIES)

    async def schema_version(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.url) as db:
            cursor = await db.execute("SELECT version FROM mailer_schema")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "sqlite": SqliteBackend,
    "postgresql": PostgresBackend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def other(backend: Backend, store: Store) -> AsyncIterator[Store]:
    """A second node on the same database (another process, in life)."""
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


def want(recipient: str, due: float = 10.0, *, expires: float = 1000.0, mail: str = "m") -> Wanted:
    return Wanted(mail, recipient, due, expires, f"<{mail}.{recipient}@example.org>")


async def bring_in(store: Store, *wanted: Wanted, event: str = "e", now: float = 0) -> None:
    """Plan `wanted` against what is stored and keep it as the version in force."""
    plan = plan_event(event, wanted, await store.stored_deliveries(event))
    digest = f"digest{len(wanted)}"
    version = Version(event, f"schedules/{event}.toml", "E", digest, "t", None, "[]", plan)
    await store.save_valid([version], now=now)


async def states_of(store: Store, event: str = "e", mail: str = "m") -> dict[str, str]:
    return {d.recipient: d.state for d in await store.deliveries_of(event, mail)}


def sent(delivery: int, *, at: float = 20.0) -> Attempt:
    return Attempt(delivery, at, "sent", 250, "250 ok", S.SENT, 1)


# -- the plan applied: insert, retime, cancel, revive ---------------------------------------


async def test_a_plan_inserts_retimes_cancels_and_revives(store: Store):
    await bring_in(store, want("a", 10), want("b", 20))
    assert await states_of(store) == {"a": "scheduled", "b": "scheduled"}
    assert await store.next_due() == 10
    await bring_in(store, want("a", 15))  # a moved, b no longer wanted
    assert await states_of(store) == {"a": "scheduled", "b": "cancelled"}
    assert await store.next_due() == 15
    await bring_in(store, want("a", 15), want("b", 30))  # b put back
    assert await states_of(store) == {"a": "scheduled", "b": "scheduled"}
    assert [d.due for d in await store.deliveries_of("e", "m")] == [15, 30]


async def test_a_plan_leaves_a_delivery_being_sent_as_it_is(store: Store):
    await bring_in(store, want("a", 10))
    (claimed,), _ = await store.claim_due(10, limit=5)
    await bring_in(store)  # the event no longer wants it, while it is on its way
    assert await states_of(store) == {"a": "sending"}
    await store.record(sent(claimed.id))
    assert await states_of(store) == {"a": "sent"}


async def test_stored_deliveries_are_every_delivery_of_the_event(store: Store):
    await bring_in(store, want("a", 10), want("b", 20))
    await bring_in(store, want("c"), event="other")
    stored = await store.stored_deliveries("e")
    assert sorted((s.recipient, s.due, s.state) for s in stored) == [
        ("a", 10, S.SCHEDULED),
        ("b", 20, S.SCHEDULED),
    ]


# -- the queue: claims, expiry, requeue ------------------------------------------------------


async def test_claims_take_what_is_due_earliest_first_once_and_expire_what_is_past(store: Store):
    late = want("late", 50, expires=60)
    await bring_in(store, late, want("b", 20), want("a", 10), want("z", 500))
    claimed, expired = await store.claim_due(100, limit=10)
    assert [c.recipient for c in claimed] == ["a", "b"]
    assert expired == 1
    assert await store.claim_due(100, limit=10) == ([], 0)  # claimed once only
    assert await store.next_due() == 500
    assert (await states_of(store))["late"] == "expired"


async def test_a_claim_takes_at_most_its_limit_and_only_what_it_is_narrowed_to(store: Store):
    await bring_in(store, want("r0", 1, mail="other"), *(want(f"r{i}", 10 + i) for i in range(5)))
    first, _ = await store.claim_due(100, limit=2)
    assert [(c.mail, c.recipient) for c in first] == [("other", "r0"), ("m", "r0")]
    narrowed, _ = await store.claim_due(100, limit=10, only=Narrow("e", "m", "r3"))
    assert [c.recipient for c in narrowed] == ["r3"]
    rest, _ = await store.claim_due(100, limit=10, only=Narrow("e", "m"))
    assert [c.recipient for c in rest] == ["r1", "r2", "r4"]


async def test_an_outcome_sets_the_state_and_a_retry_comes_back_when_due(store: Store):
    await bring_in(store, want("a", 10), want("b", 10))
    a, b = (await store.claim_due(10, limit=5))[0]
    await store.record(Attempt(a.id, 11, "retry", 451, "451 later", S.RETRYING, 1, 70))
    await store.record(Attempt(b.id, 11, "fail", 550, "550 no", S.FAILED, 1))
    assert await states_of(store) == {"a": "retrying", "b": "failed"}
    assert await store.next_due() == 70
    (again,), _ = await store.claim_due(70, limit=5)
    assert (again.recipient, again.attempts, again.first_attempt) == ("a", 1, 11)


async def test_requeue_puts_deliveries_back_as_new_and_set_state_ends_them(store: Store):
    await bring_in(store, want("a", 10, expires=100), want("b", 10))
    a, b = (await store.claim_due(10, limit=5))[0]
    await store.record(Attempt(a.id, 11, "fail", 550, "550 no", S.FAILED, 1))
    await store.set_state([b.id], S.CANCELLED, reply="no longer in the event")
    assert await store.requeue("e", "m", states=[S.FAILED], now=5000) == 1
    (row, cancelled) = await store.deliveries_of("e", "m")
    assert (row.state, row.attempts) == ("scheduled", 0)
    assert (cancelled.state, cancelled.last_reply) == ("cancelled", "no longer in the event")
    (again,), expired = await store.claim_due(5000, limit=5)  # its expiry got an hour
    assert (again.recipient, again.expires, expired) == ("a", 8600, 0)


# -- leases (SPEC §9) ------------------------------------------------------------------------


async def test_a_live_nodes_leases_are_left_alone(store: Store, other: Store):
    await bring_in(store, want("a", 10), want("b", 10))
    claimed, _ = await store.claim_due(10, limit=5)
    assert len(claimed) == 2
    # Another node starting, and claiming, while the lease runs: nothing of ours.
    assert await other.take_back_abandoned(10 + LEASE_S - 1) == 0
    assert await other.claim_due(10 + LEASE_S - 1, limit=5) == ([], 0)
    assert set((await states_of(store)).values()) == {"sending"}


async def test_an_expired_lease_goes_to_the_next_claim_of_another_node(store: Store, other: Store):
    await bring_in(store, want("a", 10))
    (mine,), _ = await store.claim_due(10, limit=5)  # and then this node stops renewing
    assert await store.claim_due(10 + LEASE_S, limit=5) == ([], 0)  # never our own again
    (theirs,), _ = await other.claim_due(10 + LEASE_S, limit=5)
    assert (theirs.id, theirs.recipient) == (mine.id, "a")
    await store.release([mine.id])  # what we release is no longer ours: left as it is
    assert await other.claim_due(10 + LEASE_S, limit=5) == ([], 0)
    assert await states_of(store) == {"a": "sending"}


async def test_a_node_whose_lease_was_taken_over_never_overwrites_the_new_holders_row(
    store: Store, other: Store
):
    await bring_in(store, want("a", 10), want("b", 10))
    mine, _ = await store.claim_due(10, limit=5)  # then this node stalls past its lease
    theirs, _ = await other.claim_due(10 + LEASE_S, limit=5)
    a, b = sorted(theirs, key=lambda c: c.recipient)
    await other.record(Attempt(a.id, 41, "retry", 451, "451 theirs", S.RETRYING, 1, 99))
    # The stalled node wakes and records what it had in flight, both ways it can.
    await store.record(sent(mine[0].id, at=42))
    await store.record_now([sent(c.id, at=42) for c in mine])
    rows = {d.recipient: d for d in await store.deliveries_of("e", "m")}
    assert (rows["a"].state, rows["a"].last_reply, rows["a"].sent_at) == (
        "retrying",
        "451 theirs",
        None,
    )
    assert rows["b"].state == "sending"  # still the other node's, on its way
    await other.record(sent(b.id, at=43))
    assert await states_of(store) == {"a": "retrying", "b": "sent"}


async def test_nodes_claiming_at_once_never_get_the_same_delivery(backend: Backend, store: Store):
    await bring_in(store, *(want(f"r{i:03}", 10) for i in range(300)))
    nodes = [store, *[await backend.open() for _ in range(3)]]

    async def drain(node: Store) -> list[int]:
        taken: list[int] = []
        while claimed := (await node.claim_due(10, limit=7))[0]:
            taken += [c.id for c in claimed]
        return taken

    try:
        shares = await asyncio.gather(*(drain(node) for node in nodes))
    finally:
        await asyncio.gather(*(node.close() for node in nodes[1:]))
    every = [i for share in shares for i in share]
    assert len(every) == len(set(every)) == 300


async def test_renewed_leases_hold_and_lapse_a_lease_after_the_last_renewal(
    store: Store, other: Store
):
    await bring_in(store, want("a", 10), want("b", 10))
    await store.claim_due(10, limit=5)
    assert await store.renew_leases(10 + LEASE_S - 1) == 2
    assert await other.claim_due(10 + LEASE_S + 1, limit=5) == ([], 0)  # renewed: held
    taken, _ = await other.claim_due(10 + 2 * LEASE_S - 1, limit=5)
    assert sorted(c.recipient for c in taken) == ["a", "b"]
    assert await store.renew_leases(10 + 2 * LEASE_S) == 0  # none of them is ours now


async def test_a_start_takes_back_at_once_what_a_stopped_process_of_this_host_held(
    backend: Backend, store: Store
):
    ended = await asyncio.create_subprocess_exec("true")
    await ended.wait()
    dead = Node(Node.here().host, ended.pid, "dead")
    elsewhere = Node("another-host.example.org", ended.pid, "alive")
    await bring_in(store, want("a", 10), want("b", 10), want("c", 10))
    for node, limit in ((dead, 1), (elsewhere, 1)):
        gone = await backend.open(node=node)
        await gone.claim_due(10, limit=limit)
        await gone.close()
    assert await store.take_back_abandoned(11) == 1  # the dead one's, not the other host's
    assert sorted((await states_of(store)).values()) == ["scheduled", "scheduled", "sending"]
    assert await store.take_back_abandoned(10 + LEASE_S) == 1  # the other host's ran out
    assert set((await states_of(store)).values()) == {"scheduled"}


async def test_released_claims_go_back_as_they_were(store: Store):
    await bring_in(store, want("a", 10), want("b", 10))
    a, b = (await store.claim_due(10, limit=5))[0]
    await store.record(Attempt(a.id, 11, "retry", 451, "451", S.RETRYING, 1, 10))
    await store.release([b.id])
    a, b = sorted((await store.claim_due(11, limit=5))[0], key=lambda c: c.recipient)
    await store.release([a.id, b.id])
    assert await states_of(store) == {"a": "retrying", "b": "scheduled"}


async def test_release_held_puts_back_every_claim_of_this_node_and_no_other(
    store: Store, other: Store
):
    await bring_in(store, want("a", 10), want("b", 10), want("c", 10))
    await store.claim_due(10, limit=2)  # a claim whose answer the database failure swallowed
    await other.claim_due(10, limit=5)
    assert await store.release_held() == 2
    assert sorted((await states_of(store)).values()) == ["scheduled", "scheduled", "sending"]


async def until_true(ask: Callable[[], Awaitable[bool]], *, timeout_s: float = 5.0) -> None:
    """Ask until the answer is yes, within a bounded time."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await ask():
        assert asyncio.get_running_loop().time() < deadline, "never said yes"
        await asyncio.sleep(0.05)


# -- nodes and the planner (SPEC §9) ---------------------------------------------------------


async def test_nodes_are_listed_with_the_one_planner_and_leave_or_are_forgotten(
    backend: Backend, store: Store, other: Store
):
    await store.beat(100, planner=True)
    await other.beat(101, planner=False)
    await other.beat(105, planner=True)  # took over: the first no longer says it plans
    rows = await store.nodes()
    assert [(r.id, r.started, r.last_seen, r.planner) for r in rows] == [
        (store.node.id, 100, 100, False),
        (other.node.id, 101, 105, True),
    ]
    assert (rows[0].host, rows[0].pid) == (store.node.host, store.node.pid)
    await other.leave()
    assert [r.id for r in await store.nodes()] == [store.node.id]
    gone = await backend.open(node=Node("elsewhere", 1, "old"))
    await gone.beat(106 + NODE_FORGOTTEN_S, planner=False)  # a day on: the first is forgotten
    assert [r.id for r in await store.nodes()] == [gone.node.id]
    await gone.close()


async def test_one_planner_at_a_time_and_another_takes_over_when_it_goes(
    backend: Backend, store: Store
):
    """PostgreSQL: an advisory lock of the planner's own connection; SQLite: one node, which
    plans (decisions.md)."""
    several = isinstance(backend, PostgresBackend)
    second, third = await backend.open(), await backend.open()
    try:
        assert await store.hold_planner()
        assert await second.hold_planner() is not several
        assert await store.hold_planner()  # still: asked again, it keeps the lock
        await store.close()  # its connection ends, and the server frees the lock
        await until_true(second.hold_planner)  # as soon as its backend has gone
        assert await third.hold_planner() is not several
    finally:
        await asyncio.gather(second.close(), third.close())


# -- group commit ----------------------------------------------------------------------------


async def test_outcomes_arriving_together_are_committed_before_record_returns(
    store: Store, other: Store
):
    await bring_in(store, *(want(f"r{i:02}", 1) for i in range(20)))
    claimed, _ = await store.claim_due(100, limit=20)
    await asyncio.gather(*(store.record(sent(c.id)) for c in claimed))
    # Read by another connection, the first still open: committed, not merely cached.
    (counts,) = await other.mail_counts()
    assert counts.counts[S.SENT] == 20


async def test_a_failed_batch_is_said_to_every_outcome_in_it(store: Store):
    await bring_in(store, want("a", 1))
    (claimed,), _ = await store.claim_due(100, limit=1)
    results = await asyncio.gather(
        store.record(sent(claimed.id)),
        store.record(sent(999_999)),  # no such delivery: the batch it lands in fails
        return_exceptions=True,
    )
    assert results[1] is not None and isinstance(results[1], Exception)


async def test_turns_are_spaced_evenly_for_every_node_together(store: Store, other: Store):
    """max_per_minute across nodes (SPEC §9): one turn per interval, whoever asks."""
    asked = [(store, 100.0), (other, 100.0), (store, 100.1), (other, 100.2)]
    assert [await s.reserve_turn(now, interval_s=0.5) for s, now in asked] == [
        100.0,
        100.5,
        101.0,
        101.5,
    ]
    assert await other.reserve_turn(500.0, interval_s=0.5) == 500.0  # idle: no backlog
    at_once = await asyncio.gather(
        *(s.reserve_turn(600.0, interval_s=0.25) for _ in range(10) for s in (store, other))
    )
    assert sorted(at_once) == [600.0 + 0.25 * n for n in range(20)]  # none given twice
    # A wall clock set back an hour: turns start again from it, not an hour from now.
    assert await store.reserve_turn(600.0 - 3600, interval_s=0.5) == 600.0 - 3600


# -- the versions in force -------------------------------------------------------------------


async def test_an_invalid_file_keeps_the_last_valid_version_and_a_removed_one_cancels(
    store: Store,
):
    await bring_in(store, want("a", 10), want("b", 10))
    (a, _b), _ = await store.claim_due(10, limit=5)
    await store.record(sent(a.id))
    await store.save_error("e", source="schedules/e.toml", error="bad", now=5)
    row = (await store.events())["e"]
    assert (row.error, row.digest, row.removed) == ("bad", "digest2", False)
    assert await store.last_valid("e") == ("t", None)
    await store.save_error("new", source="schedules/new.toml", error="bad", now=5)
    assert await store.last_valid("new") is None  # never valid
    assert (await store.events())["new"].digest is None
    await store.release([_b.id])
    assert await store.remove_event("e", now=6) == 1
    row = (await store.events())["e"]
    assert (row.removed, row.error) == (True, None)
    assert await states_of(store) == {"a": "sent", "b": "cancelled"}
    await bring_in(store, want("a", 10), want("b", 10))  # the file is back
    assert (await store.events())["e"].removed is False
    assert await states_of(store) == {"a": "sent", "b": "scheduled"}


def version_with(event: str, files: dict[str, bytes]) -> Version:
    attached = tuple(File(n, hashlib.sha256(d).hexdigest(), d) for n, d in sorted(files.items()))
    return Version(
        event, f"schedules/{event}/event.toml", "E", "d", "t", None, "[]", None, attached
    )


async def blob_count(backend: Backend) -> int:
    if isinstance(backend, SqliteBackend):
        with sqlite3.connect(backend.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0])
    async with await psycopg.AsyncConnection.connect(str(backend.address)) as db:
        row = await (await db.execute("SELECT COUNT(*) FROM blobs")).fetchone()
        return int(row[0]) if row else 0


async def test_a_stamp_is_kept_with_its_version_and_only_for_the_version_in_force(store: Store):
    """file_stamps.py: a version's files' metadata, saved with it or found later by a read."""
    version = Version("e", "schedules/e.toml", "E", "d1", "t", None, "[]", stamp='{"a": 1}')
    await store.save_valid([version], now=0)
    assert (await store.events())["e"].stamp == '{"a": 1}'
    await store.save_stamps([("e", "d0", "stale")])  # another version's: ignored
    assert (await store.events())["e"].stamp == '{"a": 1}'
    await store.save_stamps([("e", "d1", '{"b": 2}')])
    assert (await store.events())["e"].stamp == '{"b": 2}'
    await store.save_valid([dataclasses.replace(version, digest="d2", stamp=None)], now=1)
    assert (await store.events())["e"].stamp is None  # a new version: no stamp of the old


async def test_attachments_are_kept_with_the_version_each_content_once(
    backend: Backend, store: Store, other: Store
):
    """SPEC §9: the version in force stored whole, attachments by content digest; another
    node reads the same bytes."""
    report, programme = b"%PDF-1.7 rapport\x00\xff", b"%PDF-1.7 program"
    await store.save_valid(
        [
            version_with("e", {"rapport.pdf": report, "bilagor/program.pdf": programme}),
            version_with("f", {"samma.pdf": report}),
        ],
        now=1,
    )
    assert await other.event_files("e") == {"rapport.pdf": report, "bilagor/program.pdf": programme}
    assert await other.event_files("f") == {"samma.pdf": report}
    assert await blob_count(backend) == 2  # the report once, though two events attach it
    await store.save_valid([version_with("e", {"rapport.pdf": b"%PDF-1.7 ny"})], now=2)
    assert await other.event_files("e") == {"rapport.pdf": b"%PDF-1.7 ny"}
    assert await blob_count(backend) == 2  # the programme no longer attached: gone
    await store.save_error("e", source="schedules/e/event.toml", error="bad", now=3)
    assert await other.event_files("e") == {"rapport.pdf": b"%PDF-1.7 ny"}  # still in force
    assert await other.event_files("never") == {}


# -- reports ---------------------------------------------------------------------------------


async def test_mail_counts_and_deliveries_of_report_every_state(store: Store):
    await bring_in(store, want("a", 10), want("b", 10), want("c", 10), want("d", 20, mail="n"))
    a, b, _c = (await store.claim_due(10, limit=3))[0]
    await store.record(sent(a.id))
    await store.record(Attempt(b.id, 12, "retry", 451, "451 try later", S.RETRYING, 1, 99))
    m, n = await store.mail_counts()
    assert (m.mail, m.due, n.mail, n.due) == ("m", 10, "n", 20)  # in due order
    assert {k: v for k, v in m.counts.items() if v} == {S.SENT: 1, S.RETRYING: 1, S.SENDING: 1}
    assert m.problem == "451 try later" and n.problem is None
    assert await store.mail_counts("other") == []
    rows = await store.deliveries_of("e", "m")
    assert [(r.recipient, r.state, r.attempts) for r in rows] == [
        ("a", "sent", 1),
        ("b", "retrying", 1),
        ("c", "sending", 0),
    ]
    assert rows[0].sent_at == 20 and rows[1].last_reply == "451 try later"


async def test_mail_counts_sum_a_mails_history_of_several_times(store: Store):
    """A mail sent, then moved, then sent to a late registrant: its sent deliveries have two
    times; the counts are summed and the earliest due and the latest expiry shown."""
    await bring_in(store, want("a", 10, expires=100), want("b", 10, expires=100))
    for claimed in (await store.claim_due(10, limit=2))[0]:
        await store.record(sent(claimed.id))
    await bring_in(store, want("a", 50), want("b", 50), want("c", 50), want("d", 50))
    (c, _d), _ = await store.claim_due(60, limit=2)
    await store.record(sent(c.id))
    (m,) = await store.mail_counts("e")
    assert (m.due, m.expires) == (10, 1000)
    assert {k: v for k, v in m.counts.items() if v} == {S.SENT: 3, S.SENDING: 1}


# -- migrations ------------------------------------------------------------------------------


# -- calendar identity and hold (SPEC §10) ---------------------------------------------------


async def keep(store: Store, facts: str, *, now: float, held: bool = False) -> None:
    """A version of event "e" whose calendar shows `facts`, a change settling after 600 s."""
    version = Version("e", "schedules/e.toml", "E", facts, "t", None, "[]", facts=facts, held=held)
    await store.save_valid([version], now=now, settle_s=600)


async def test_a_change_waits_to_settle_an_undone_one_is_forgotten_and_sequence_only_grows(
    store: Store,
):
    await keep(store, "first", now=0)
    assert (await store.calendar("e")).sequence == 0
    await keep(store, "moved", now=100)
    await keep(store, "moved", now=400)  # the same change saved again keeps its time
    assert await store.settled(699) == []
    (row,) = await store.settled(700)
    assert (row.announced, row.pending, row.settle_at) == ("first", "moved", 700)
    assert await store.announce(row, [want("a", 700, mail="update")])
    assert not await store.announce(row, [])  # a second node with the same row: nothing
    now_in_force = await store.calendar("e")
    assert (now_in_force.sequence, now_in_force.announced, now_in_force.previous) == (
        1,
        "moved",
        "first",
    )
    assert await states_of(store, mail="update") == {"a": "scheduled"}
    await keep(store, "first", now=800)  # moved back ...
    await keep(store, "moved", now=900)  # ... and again, within the window: nothing waits
    assert await store.settled(10_000) == []
    assert (await store.calendar("e")).sequence == 1


async def test_a_second_round_replaces_the_first_ones_notice_to_the_same_person(store: Store):
    await keep(store, "first", now=0)
    await keep(store, "moved", now=0)
    (row,) = await store.settled(600)
    await store.announce(row, [want("a", 600, mail="update")])
    (claimed,), _ = await store.claim_due(600, limit=5)
    await store.record(sent(claimed.id, at=601))
    await keep(store, "again", now=700)
    (row,) = await store.settled(1300)
    second = Wanted("update", "a", 1300, 5000, "<round2@example.org>")
    await store.announce(row, [second])
    (claimed,), _ = await store.claim_due(1300, limit=5)
    assert (claimed.mail, claimed.message_id, claimed.attempts) == ("update", second[4], 0)
    await store.record(sent(claimed.id, at=1301))
    assert await store.recipients_told("e", ["update"]) == ["a"]
    assert await store.recipients_told("e", ["m"]) == []


async def test_a_held_events_deliveries_are_neither_claimed_nor_waited_for(store: Store):
    await bring_in(store, want("a", 10))
    await keep(store, "facts", now=0, held=True)
    assert await store.next_due() is None
    assert await store.claim_due(20, limit=5) == ([], 0)
    assert (await store.events())["e"].held
    await keep(store, "facts", now=0)  # released
    assert await store.next_due() == 10
    (claimed,), _ = await store.claim_due(20, limit=5)
    assert claimed.recipient == "a"


# -- bounces and personal data (SPEC §11, §13) ----------------------------------------------

DAY_S = 86400.0


async def sent_delivery(store: Store, recipient: str = "anna@example.org") -> int:
    await bring_in(store, want(recipient, 10))
    (claimed,), _ = await store.claim_due(10, limit=5)
    await store.record(sent(claimed.id))
    return claimed.id


async def test_the_secret_is_made_once_and_shared_by_every_node(store: Store, other: Store):
    first = await store.secret()
    assert len(first) == 32
    assert await other.secret() == first == await store.secret()


async def test_a_permanent_bounce_ends_a_sent_delivery_once(store: Store, other: Store):
    delivery = await sent_delivery(store)
    bounce = Bounce("<dsn-1@relay>", delivery, 30.0, "5.1.1", "5.1.1 user unknown", 550)
    assert await store.record_bounce(bounce) == "recorded"
    assert await other.record_bounce(bounce) == "seen"  # read again after a restart
    (row,) = await store.deliveries_of("e", "m")
    assert (row.state, row.last_reply, row.attempts) == ("bounced", "5.1.1 user unknown", 1)
    (counts,) = await store.mail_counts("e")
    assert counts.counts[S.BOUNCED] == 1 and counts.problem == "5.1.1 user unknown"
    assert (await store.state_counts())[S.BOUNCED] == 1


async def test_a_delay_is_an_attempt_and_an_unknown_delivery_is_said(store: Store):
    delivery = await sent_delivery(store)
    delay = Bounce("<dsn-2@relay>", delivery, 30.0, "4.4.7", "4.4.7 delayed")
    assert await store.record_bounce(delay) == "recorded"
    assert await states_of(store) == {"anna@example.org": "sent"}
    unknown = Bounce("<dsn-3@relay>", delivery + 1000, 30.0, "5.1.1", "gone")
    assert await store.record_bounce(unknown) == "unknown"


async def test_a_purge_erases_what_ended_long_enough_ago_and_keeps_the_counts(store: Store):
    keys = Keyring(b"k" * 32)
    await sent_delivery(store)
    await bring_in(store, want("bo@example.org", 10, expires=5 * DAY_S), event="newer")
    now = 2 * DAY_S  # event "e" ended at 1000 s (its last expiry), "newer" not yet
    dry = await store.purge(now=now, keep_s=DAY_S, erase=keys.erased, dry_run=True)
    assert dry.events == ("e",) and dry.deliveries == 1 and dry.bytes > len("anna@example.org")
    assert await states_of(store) == {"anna@example.org": "sent"}  # dry: nothing changed
    assert await store.purge(now=now, keep_s=DAY_S, erase=keys.erased) == dry
    assert await states_of(store) == {keys.erased("anna@example.org"): "sent"}
    assert await store.last_valid("e") is None
    assert (await store.mail_counts("e"))[0].counts[S.SENT] == 1
    assert await states_of(store, "newer") == {"bo@example.org": "scheduled"}
    again = await store.purge(now=now + 1, keep_s=DAY_S, erase=keys.erased)
    assert again.events == ()  # nothing saved since: nothing to erase


async def test_a_purge_erases_the_attachments_no_other_event_keeps(
    backend: Backend, store: Store
):
    keys = Keyring(b"k" * 32)
    names, shared = b"%PDF deltagare: Olle Gammal", b"%PDF program"
    await store.save_valid([version_with("e", {"names.pdf": names, "p.pdf": shared})], now=0)
    later = dataclasses.replace(version_with("f", {"p.pdf": shared}), ends=10 * DAY_S)
    await store.save_valid([later], now=0)  # an event still to come, with the same programme
    purged = await store.purge(now=3 * DAY_S, keep_s=DAY_S, erase=keys.erased)
    assert purged.events == ("e",) and purged.bytes >= len(names) + len(shared)
    assert await store.event_files("e") == {}
    assert await store.event_files("f") == {"p.pdf": shared}  # still needed by "f"
    assert await blob_count(backend) == 1


@pytest.mark.parametrize("keep_days", [0.5, 3.0])
async def test_a_deleted_event_is_purged_keep_after_its_deletion(store: Store, keep_days: float):
    keys = Keyring(b"k" * 32)
    await bring_in(store, want("cy@example.org", 10, expires=9 * DAY_S))
    await store.remove_event("e", now=DAY_S)  # cancelled before it was sent
    purged = await store.purge(now=2 * DAY_S, keep_s=keep_days * DAY_S, erase=keys.erased)
    assert purged.events == (("e",) if keep_days < 1 else ())


async def test_every_earlier_schema_is_migrated_forward_with_its_data(backend: Backend):
    # Each older schema of either store (PostgreSQL's 1 to 5, SQLite's 1 to 8), holding an
    # event and deliveries as the older mailer left them.
    for version in range(1, backend.schema_versions):
        await backend.build_at(version)
        store = await backend.open()
        try:
            assert await backend.schema_version() == backend.schema_versions
            assert (await store.events())["e"].title == "Förlabb"
            # Caught sending by the older mailer: back in the queue, as a reset did then.
            assert await store.take_back_abandoned(2) == 1, version
            assert await states_of(store) == {"a": "sent", "b": "retrying"}
            (claimed,), _ = await store.claim_due(2, limit=5)
            assert await store.renew_leases(3) == 1  # leases work on the migrated rows
            await store.record(sent(claimed.id))
            assert await states_of(store) == {"a": "sent", "b": "sent"}
        finally:
            await store.close()


async def test_nodes_starting_together_create_the_schema_once(backend: Backend):
    opened = await asyncio.gather(*(backend.open() for _ in range(4)), return_exceptions=True)
    stores = [s for s in opened if not isinstance(s, BaseException)]
    try:
        assert stores == opened  # none failed (PostgreSQL without a lock: pg_type's index)
        assert await backend.schema_version() == backend.schema_versions
        await bring_in(stores[0], want("a", 10))
        assert await states_of(stores[3]) == {"a": "scheduled"}
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# -- opening: which store, and for `mailer status` ------------------------------------------


async def test_open_store_chooses_the_implementation_by_the_address(backend: Backend):
    store = await open_store(backend.address)
    try:
        expected = PostgresStore if isinstance(backend, PostgresBackend) else SqliteStore
        assert isinstance(store, expected)
        await bring_in(store, want("a", 10))
    finally:
        await store.close()


async def test_status_never_sets_up_a_database_nor_writes_one(backend: Backend):
    with pytest.raises(ConfigError, match=r"no database at .*is the service set up"):
        await open_read_only(backend.address)
    node = await backend.open()
    await bring_in(node, want("a", 10))
    await node.close()
    status = await open_read_only(backend.address)
    try:
        assert await states_of(status) == {"a": "scheduled"}
        with pytest.raises(StoreUnavailable, match=r"read-?only"):
            await status.claim_due(10, limit=1)
    finally:
        await status.close()


def test_a_sqlite_user_never_imports_psycopg():
    code = (
        "import sys, mailer.cli, mailer.store; "
        "assert not [m for m in sys.modules if m.startswith('psycopg')], 'psycopg imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_event_counts_give_each_events_states_and_next_waiting_delivery(store: Store):
    await bring_in(store, want("a", 10), want("b", 30), want("c", 50, mail="n"))
    await bring_in(store, want("x", 70), event="f")
    (a,), _ = await store.claim_due(10, limit=1)
    await store.record(sent(a.id))
    counts = await store.event_counts()
    assert set(counts) == {"e", "f"}
    assert {k: v for k, v in counts["e"].counts.items() if v} == {S.SENT: 1, S.SCHEDULED: 2}
    assert counts["e"].next_due == 30  # the sent one, due at 10, no longer waits
    assert counts["f"].next_due == 70
    (b,), _ = await store.claim_due(30, limit=1)
    await store.record(Attempt(b.id, 31, "retry", 451, "later", S.RETRYING, 1, 40))
    assert (await store.event_counts())["e"].next_due == 40  # a retry waits until its turn
