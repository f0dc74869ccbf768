"""Wake-ups across nodes on PostgreSQL (SPEC §9): a plan written, or deliveries put back, by
one node wake another's sending within a second, not at its next poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from mailer.clock import SystemClock
from mailer.commands import requeue_failed
from mailer.config import Settings, load_settings
from mailer.engine import Engine
from mailer.store import open_store
from mailer.transports.maildir import MaildirTransport
from tests.project import make_project, timed_event, write_event
from tests.test_service import soon, until

# The sending node's poll, far beyond the test's bounds: only a wake-up can make it send.
SLOW_POLL_S = 60.0
# SPEC §9: "seen by every node within a second".
WITHIN_S = 1.0


def delivered(folder: Path) -> int:
    new = folder / "new"
    return len(list(new.iterdir())) if new.is_dir() else 0


def listeners(url: str) -> list[int]:
    """The backends of the database that listen for mailer's wake-ups, by pid."""
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN mailer' AND state = 'idle'"
        ).fetchall()
    return [pid for (pid,) in rows]


@asynccontextmanager
async def sending_node(settings: Settings, maildir: Path) -> AsyncIterator[Engine]:
    """A node that sends but plans nothing itself (its folder might lag) and polls slowly."""
    store = await open_store(settings.paths.database)
    engine = Engine(
        settings,
        store=store,
        transport=MaildirTransport(maildir),
        clock=SystemClock(),
        poll_s=SLOW_POLL_S,
    )
    running = asyncio.create_task(engine.run(sources=[], watch_folder=False))
    try:
        await engine.loaded.wait()
        await until(lambda: bool(listeners(str(settings.paths.database))))
        yield engine
    finally:
        engine.stop()
        await running
        await store.close()


async def test_a_plan_or_a_retry_by_one_node_wakes_another_within_a_second(
    tmp_path: Path, fresh_database: str
):
    config = make_project(tmp_path)
    config.write_text(config.read_text().replace('"var/mailer.sqlite3"', f'"{fresh_database}"'))
    settings = load_settings(config)
    due = soon(-1)
    source = write_event(tmp_path, "seminarium", timed_event(due, people=3))
    maildir = tmp_path / "node-b"
    loop = asyncio.get_running_loop()
    async with sending_node(settings, maildir), planning_node(settings, tmp_path) as planner:
        await planner.plan([source])  # committed when it returns
        # Woken, or it would wait its 60 s poll; the first message also starts its renderers.
        await until(lambda: delivered(maildir) == 3, timeout_s=SLOW_POLL_S / 4)

        # The listening connection is cut (a database restart, a firewall): it comes back.
        (cut,) = listeners(fresh_database)
        with psycopg.connect(fresh_database, autocommit=True) as db:
            db.execute("SELECT pg_terminate_backend(%s)", (cut,))
        await until(lambda: listeners(fresh_database) not in ([], [cut]), timeout_s=10)

        # A late registrant: the sending node holds the old version parsed, without her; it
        # must send from the new one (it cancelled her as "no longer in the event" before).
        write_event(tmp_path, "seminarium", timed_event(due, people=4))
        await planner.plan([source])
        started = loop.time()
        await until(lambda: delivered(maildir) == 4, timeout_s=SLOW_POLL_S / 4)
        assert loop.time() - started < WITHIN_S

        with psycopg.connect(fresh_database, autocommit=True) as db:
            db.execute("UPDATE deliveries SET state = 'failed' WHERE recipient LIKE 'person00000%'")
        started = loop.time()
        assert await requeue_failed(settings, "seminarium", None, now=datetime.now(UTC)) == 1
        await until(lambda: delivered(maildir) == 5, timeout_s=SLOW_POLL_S / 4)
        assert loop.time() - started < WITHIN_S
    assert delivered(tmp_path / "node-a") == 0  # the planner sent nothing
    with psycopg.connect(fresh_database) as db:
        assert db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY 1").fetchall() == [
            ("sent", 4)
        ]


@asynccontextmanager
async def planning_node(settings: Settings, root: Path) -> AsyncIterator[Engine]:
    """A node that only plans (`plan`), as `mailer send` plans before it sends."""
    store = await open_store(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(root / "node-a"), clock=SystemClock()
    )
    try:
        yield engine
    finally:
        await engine.close()
        await store.close()
