"""The store under real faults: a cancelled transaction, another process holding the lock, a
full disk. Every transaction ends; the service backs off, logs once per kind of failure, and
sends everything exactly once when the fault ends."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from mailer.clock import SystemClock
from mailer.config import load_settings
from mailer.delivery import DeliveryState
from mailer.engine import Engine
from mailer.plan import Wanted, plan_event
from mailer.store import Attempt, Store, Version
from mailer.store.sqlite import SqliteStore
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport
from tests.postgres import Cluster
from tests.project import REPO, make_project, smtp_transport, timed_event, tmpfs, write_event
from tests.smtpd import SmtpServer
from tests.test_service import smtp_password, soon, states, until

pytestmark = pytest.mark.timeout(60)
__all__ = ["smtp_password"]
# Short, so that holding the lock for twice as long keeps a test fast.
BUSY_TIMEOUT_S = 0.25
# A second process takes the write lock when told to (a line on stdin) and holds it.
HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
sys.stdin.readline()
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@asynccontextmanager
async def running(
    root: Path, server: SmtpServer, *, busy_timeout_s: float = BUSY_TIMEOUT_S
) -> AsyncIterator[Engine]:
    """The engine, `connections = 4`, against `server`, its store on a short busy timeout."""
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database, busy_timeout_s=busy_timeout_s)
    transport = SmtpTransport(
        settings.transport,  # type: ignore[arg-type]
        connections=settings.sending.connections,
        max_per_minute=0,
        tls_context=server.client_context(),
    )
    engine = Engine(settings, store=store, transport=transport, clock=SystemClock())
    task = asyncio.create_task(engine.run())
    try:
        yield engine
    finally:
        engine.stop()
        await asyncio.wait_for(task, timeout=10)
        await store.close()


def project(root: Path, server: SmtpServer, *, database: str = "var/mailer.sqlite3") -> None:
    config = make_project(root, transport=smtp_transport(server.port), connections=4)
    config.write_text(config.read_text().replace("var/mailer.sqlite3", database))


def assert_each_once(server: SmtpServer, people: int, *, prefix: str = "person") -> None:
    received = collections.Counter(
        m.rcpt_tos[0] for m in server.messages if m.rcpt_tos[0].startswith(prefix)
    )
    assert sorted(received) == [f"{prefix}{i:05d}@example.org" for i in range(people)]
    assert set(received.values()) == {1}, "sent twice"


def resumed(caplog: pytest.LogCaptureFixture) -> bool:
    return any("sending resumed" in r.getMessage() for r in caplog.records)


def trouble(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The service's own lines (the test SMTP server logs too, at a level other tests set)."""
    return [r for r in caplog.records if r.name == "mailer"]


async def test_a_transaction_cancelled_right_after_begin_leaves_the_store_usable(tmp_path: Path):
    store = await SqliteStore.open(tmp_path / "mailer.sqlite3")

    async def write() -> None:
        async with store.transaction() as db:
            await db.execute("UPDATE deliveries SET state = state")

    try:
        for _ in range(20):
            task = asyncio.create_task(write())
            # BEGIN has run in aiosqlite's thread; the task has not resumed yet.
            while not store.db.in_transaction and not task.done():
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert await store.renew_leases(0) == 0  # a new transaction begins
    finally:
        await store.close()


async def test_an_outcome_whose_waiter_was_cancelled_does_not_crash_the_flush(tmp_path: Path):
    store = await SqliteStore.open(tmp_path / "mailer.sqlite3")
    try:
        # No such delivery: the foreign key fails the batch.
        attempt = Attempt(999, 1.0, "sent", 250, "ok", DeliveryState.SENT, 1)
        waiter = asyncio.create_task(store.record(attempt))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert store._flusher is not None
        await store._flusher  # raised InvalidStateError before
    finally:
        await store.close()


async def test_a_database_locked_by_another_process_is_waited_for(tmp_path: Path):
    store = await Store.open(tmp_path / "db")
    wanted = [Wanted("invitation", "a", 1, 1000, "<a@example.org>")]
    plan = plan_event("e", wanted, [])
    await store.save_valid([Version("e", "e.toml", "E", "d", "", None, "[]", plan)], now=0)
    script = (
        "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(1.0);"
        " db.execute('COMMIT')"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "db")], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            started = asyncio.get_running_loop().time()
            claimed, _ = await store.claim_due(100, limit=10)  # waits (busy_timeout), proceeds
            assert [c.recipient for c in claimed] == ["a"]
            assert asyncio.get_running_loop().time() - started >= 0.5
        finally:
            await store.close()


async def test_another_process_holding_the_lock_delays_mail_without_losing_or_doubling_any(
    tmp_path: Path, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
):
    project(tmp_path, smtp_server)
    people, hold_s = 60, 12 * BUSY_TIMEOUT_S
    write_event(tmp_path, "seminarium", timed_event(soon(1.0), people=people))
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(tmp_path / "var" / "mailer.sqlite3"),
        str(hold_s),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    with caplog.at_level(logging.INFO, logger="mailer"):
        async with running(tmp_path, smtp_server):
            await until(lambda: len(smtp_server.messages) >= 4, timeout_s=20)
            holder.stdin.write(b"go\n")  # mid-batch: outcomes and claims meet the lock
            assert await holder.stdout.readline() == b"locked\n"
            assert await holder.wait() == 0
            await until(lambda: set(states(tmp_path).values()) == {"sent"}, timeout_s=30)
            await until(lambda: resumed(caplog), timeout_s=10)
            # Hot reload still works after the fault.
            write_event(
                tmp_path, "later", timed_event(soon(0.5), people=1).replace("person", "later")
            )
            await until(lambda: len(states(tmp_path)) == people + 1, timeout_s=15)
            await until(lambda: set(states(tmp_path).values()) == {"sent"}, timeout_s=15)
    assert_each_once(smtp_server, people)
    assert_each_once(smtp_server, 1, prefix="later")
    locked = [m for m in trouble(caplog) if "locked" in m]
    assert 1 <= len(locked) <= 2, trouble(caplog)  # once per kind, not once per loop
    assert len(ours(caplog)) < people + 20  # a line per delivery, a few more


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB file system (tmpfs) for the database, to fill up."""
    with tmpfs(tmp_path / "state", size="2m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    """Take every free block of `disk`; returns the file that holds them."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


async def test_a_full_disk_under_the_database_delays_mail_without_losing_or_doubling_any(
    tmp_path: Path, smtp_server: SmtpServer, small_disk: Path, caplog: pytest.LogCaptureFixture
):
    project(tmp_path, smtp_server, database="state/mailer.sqlite3")
    people = 30
    write_event(tmp_path, "seminarium", timed_event(soon(1.5), people=people))
    with caplog.at_level(logging.INFO, logger="mailer"):
        async with running(tmp_path, smtp_server):
            database = small_disk / "mailer.sqlite3"
            await until(
                lambda: deliveries_in(database) == people,
                timeout_s=20,
            )
            filler = fill(small_disk)
            await until(lambda: any("full" in m for m in trouble(caplog)), timeout_s=20)
            await asyncio.sleep(3)  # the fault lasts a while
            filler.unlink()
            await until(
                lambda: set(db_rows_at(database, "SELECT state FROM deliveries")) == {("sent",)},
                timeout_s=40,
            )
            await until(lambda: resumed(caplog), timeout_s=10)
    assert_each_once(smtp_server, people)
    assert len([m for m in trouble(caplog) if "full" in m]) <= 2, trouble(caplog)
    assert len(ours(caplog)) < people + 20  # a line per delivery, a few more


def deliveries_in(database: Path) -> int | None:
    """How many deliveries the database holds; None while it is not there or not set up."""
    try:
        return db_rows_at(database, "SELECT COUNT(*) FROM deliveries")[0][0]
    except sqlite3.Error:
        return None


def db_rows_at(path: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:  # closed: the disk is unmounted
        return db.execute(sql).fetchall()


def pg_states(url: str) -> collections.Counter[str]:
    """The deliveries' states in a PostgreSQL database; empty while it cannot be read."""
    try:
        with psycopg.connect(url, connect_timeout=2) as db:
            rows = db.execute("SELECT state FROM deliveries").fetchall()
    except psycopg.Error:
        return collections.Counter()
    return collections.Counter(state for (state,) in rows)


async def test_a_postgresql_server_that_stops_mid_send_pauses_the_node_which_resumes_after(
    tmp_path: Path,
    smtp_server: SmtpServer,
    own_postgresql: Cluster,
    caplog: pytest.LogCaptureFixture,
):
    """The server stopped as a crash stops it (every connection cut) while a node sends, and
    started again: the node pauses with one line, resumes, and each person has mail once."""
    project(tmp_path, smtp_server, database=own_postgresql.url)
    people = 400
    write_event(tmp_path, "seminarium", timed_event(soon(1.0), people=people))
    with caplog.at_level(logging.INFO, logger="mailer"):
        async with running(tmp_path, smtp_server):
            await until(lambda: len(smtp_server.messages) >= 20, timeout_s=30)
            await asyncio.to_thread(own_postgresql.stop)
            stopped_at = len(smtp_server.messages)
            await until(
                lambda: any("cannot be reached" in m for m in trouble(caplog)), timeout_s=20
            )
            await asyncio.sleep(2)  # the database stays away a while
            await asyncio.to_thread(own_postgresql.start)
            await until(lambda: pg_states(own_postgresql.url) == {"sent": people}, timeout_s=30)
            await until(lambda: resumed(caplog), timeout_s=10)
    assert stopped_at < people, "all was sent before the server stopped: nothing was tested"
    assert_each_once(smtp_server, people)
    assert len([m for m in trouble(caplog) if "cannot be reached" in m]) == 1, trouble(caplog)
    assert len(ours(caplog)) < people + 20  # a line per delivery, a few more


# -- the database damaged, deleted, read-only; `status` while `run` creates it ---------------


def mailer(root: Path, *args: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    """`python -m mailer ARGS -c root/config.toml`, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args, "-c", str(root / "config.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def start_mailer(root: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m mailer ARGS` in the background, its stderr in root/ARGS[0].log."""
    with (root / f"{args[0]}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mailer", *args, "-c", str(root / "config.toml")],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def log_of(root: Path, command: str) -> str:
    return (root / f"{command}.log").read_text()


def assert_one_line(result: subprocess.CompletedProcess[str], *, naming: Path) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if str(naming) in line]
    assert line.startswith("paths.database: ")
    return line


def test_status_on_a_missing_database_says_so_in_one_line(tmp_path: Path):
    make_project(tmp_path)
    result = mailer(tmp_path, "status")
    line = assert_one_line(result, naming=tmp_path / "var" / "mailer.sqlite3")
    assert "no database at" in line and "mailer run creates it" in line
    assert result.stdout == ""
    write_event(tmp_path, "forlabb")
    assert mailer(tmp_path, "check").returncode == 0  # check reads no database either
    assert not (tmp_path / "var" / "mailer.sqlite3").exists()  # nothing created


async def planned_database(root: Path, *, people: int = 300) -> Path:
    """A project whose database holds `people` deliveries, the service stopped."""
    make_project(root)
    write_event(root, "seminarium", timed_event("2099-01-01T09:00:00Z", people=people))
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    engine = Engine(
        settings,
        store=store,
        transport=MaildirTransport(root / "var" / "maildir"),
        clock=SystemClock(),
    )
    try:
        await engine.load_all()
    finally:
        await store.close()
    return settings.paths.database


@pytest.mark.parametrize("damage", ["malformed", "not a database"])
async def test_a_damaged_database_stops_run_and_status_with_one_line(tmp_path: Path, damage: str):
    database = await planned_database(tmp_path)
    # The deliveries' pages, found by SQLite's own page map: the middle of the file may hold
    # the overflow pages of an event's text instead (a decoding error, not "malformed").
    with sqlite3.connect(database) as db:
        (first,) = db.execute(
            "SELECT MIN(pageno) FROM dbstat WHERE name = 'deliveries' AND pagetype = 'leaf'"
        ).fetchone()
    with database.open("r+b") as file:
        if damage == "malformed":  # pages of deliveries overwritten: the header still reads
            file.seek((first - 1) * 4096)
            file.write(b"\xff" * 4 * 4096)
        else:
            file.write(b"this is not a database, it is a shopping list")
    for command in ("status", "run"):
        line = assert_one_line(await asyncio.to_thread(mailer, tmp_path, command), naming=database)
        assert damage in line


@pytest.fixture
def read_only_file(tmp_path: Path) -> Iterator[Path]:
    """The database file bind-mounted read-only over itself: what `chmod a-w` is for a user
    who is not root (as root, chmod stops no write); its folder stays writable."""
    database = asyncio.run(planned_database(tmp_path))
    subprocess.run(["mount", "--bind", str(database), str(database)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(database)], check=True)
        yield database
    finally:
        subprocess.run(["umount", str(database)], check=True)


def test_a_read_only_database_stops_run_with_one_line(tmp_path: Path, read_only_file: Path):
    line = assert_one_line(mailer(tmp_path, "run"), naming=read_only_file)
    assert "readonly" in line
    status = mailer(tmp_path, "status")  # reading is all it does
    assert status.returncode == 0 and "seminarium" in status.stdout, status.stderr


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
async def test_a_database_deleted_or_replaced_under_the_service_stops_it_loudly(
    tmp_path: Path, fault: str
):
    make_project(tmp_path)
    write_event(tmp_path, "seminarium", timed_event(soon(6), people=3))
    database = tmp_path / "var" / "mailer.sqlite3"
    service = start_mailer(tmp_path, "run")
    try:
        await until(
            lambda: deliveries_in(database) == 3,
            timeout_s=20,
        )
        copy = database.read_bytes()
        database.unlink()
        if fault == "replaced":
            database.write_bytes(copy)  # another file (a restored copy) at the same path
        code = await asyncio.to_thread(service.wait, 10)  # raised TimeoutExpired before
    finally:
        service.kill()
        service.wait()
    log = log_of(tmp_path, "run")
    assert code == 2, log
    assert "was deleted or replaced while the service ran: sending stopped" in log
    assert str(database) in log
    assert not (tmp_path / "var" / "maildir").exists()  # nothing sent meanwhile


@pytest.mark.timeout(120)
async def test_status_while_a_fresh_service_creates_its_database_never_kills_it(tmp_path: Path):
    for pair in range(5):  # ten rounds, two at a time
        await asyncio.gather(*(race(tmp_path / f"round{pair}-{i}") for i in range(2)))


async def race(root: Path) -> None:
    """`mailer run` on a fresh project and `mailer status` started at the same moment."""
    make_project(root)
    service = start_mailer(root, "run")
    status = start_mailer(root, "status")
    try:
        await asyncio.to_thread(status.wait, 20)
        await until(
            lambda: "running:" in log_of(root, "run") or service.poll() is not None,
            timeout_s=20,
        )
        service.terminate()
        code = await asyncio.to_thread(service.wait, 10)
    finally:
        service.kill()
        status.kill()
        service.wait()
        status.wait()
    assert code == 0, log_of(root, "run")  # died with "table events already exists" before
    assert "Traceback" not in log_of(root, "status")
