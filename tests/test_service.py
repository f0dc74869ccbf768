"""The running service against a real SMTP server (STARTTLS + AUTH): every outcome of SPEC §5.3."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.clock import SystemClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.store import Store
from mailer.transports.smtp import SmtpTransport
from tests.project import make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def smtp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)


def soon(seconds: float = 1.0) -> str:
    """A TOML datetime `seconds` from now: due times a moment ahead, never wall-clock luck."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def until(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Wait until `condition()` holds, or fail after a bounded time."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    root: Path, server: SmtpServer, *, trust: bool = True, **project: object
) -> AsyncIterator[Engine]:
    """The engine running against `server`; `trust=False`: its CA is not trusted."""
    make_project(root, transport=smtp_transport(server.port), **project)  # type: ignore[arg-type]
    # load_settings takes the password out of the environment; a restart reads it again.
    # (The autouse fixture's monkeypatch removes it at the end of the test.)
    os.environ.setdefault("MAILER_SMTP_PASSWORD", PASSWORD)
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    transport = SmtpTransport(
        settings.transport,
        connections=settings.sending.connections,  # type: ignore[arg-type]
        max_per_minute=0,
        tls_context=server.client_context() if trust else None,
    )
    engine = Engine(settings, store=store, transport=transport, clock=SystemClock())
    task = asyncio.create_task(engine.run())
    try:
        yield engine
    finally:
        engine.stop()
        await asyncio.wait_for(task, timeout=10)
        await store.close()


def db_rows(root: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return db.execute(sql).fetchall()


def states(root: Path) -> dict[str, str]:
    return dict(db_rows(root, "SELECT recipient, state FROM deliveries"))


async def test_due_mail_goes_out_over_starttls_and_auth_one_recipient_each(
    tmp_path: Path, smtp_server: SmtpServer
):
    write_event(tmp_path, "seminarium", timed_event(soon(1.0), people=3))
    async with running(tmp_path, smtp_server):
        await until(lambda: len(smtp_server.messages) == 3)
        await until(lambda: set(states(tmp_path).values()) == {"sent"})
    assert all(m.tls and m.login == "mailer" for m in smtp_server.messages)
    assert sorted(m.rcpt_tos for m in smtp_server.messages) == [
        ("person00000@example.org",),
        ("person00001@example.org",),
        ("person00002@example.org",),
    ]
    replies = db_rows(tmp_path, "SELECT verdict, code, reply FROM attempts")
    assert all(v == "sent" and c == 250 for v, c, _ in replies)


async def test_451_is_retried_with_backoff_and_every_attempt_logged(
    tmp_path: Path, smtp_server: SmtpServer
):
    smtp_server.faults.busy = 1
    write_event(tmp_path, "seminarium", timed_event(soon(0.5), people=1))
    async with running(tmp_path, smtp_server, backoff_first="1s"):
        await until(lambda: states(tmp_path) == {"person00000@example.org": "sent"})
    attempts = db_rows(tmp_path, "SELECT verdict, code, reply FROM attempts ORDER BY id")
    assert [(v, c) for v, c, _ in attempts] == [("retry", 451), ("sent", 250)]
    assert "try later" in attempts[0][2]
    assert db_rows(tmp_path, "SELECT attempts FROM deliveries") == [(2,)]
    assert len(smtp_server.messages) == 1


async def test_a_refused_recipient_fails_at_once_and_alone(tmp_path: Path, smtp_server: SmtpServer):
    smtp_server.faults.refuse = {"gone@example.org"}
    write_event(
        tmp_path, "seminarium", timed_event(soon(0.5), people=2, refused="gone@example.org")
    )
    async with running(tmp_path, smtp_server):
        await until(lambda: sorted(states(tmp_path).values()) == ["failed", "sent", "sent"])
    ((attempts, reply),) = db_rows(
        tmp_path, "SELECT attempts, last_reply FROM deliveries WHERE state = 'failed'"
    )
    assert attempts == 1 and "550" in reply and "rejected" in reply


async def test_a_dropped_connection_is_recovered(tmp_path: Path, smtp_server: SmtpServer):
    smtp_server.faults.drop_at_data = 1
    write_event(tmp_path, "seminarium", timed_event(soon(0.5), people=3))
    async with running(tmp_path, smtp_server, backoff_first="1s"):
        await until(lambda: set(states(tmp_path).values()) == {"sent"})
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        f"person{i:05d}@example.org" for i in range(3)
    ]


async def test_a_restart_sends_what_fell_due_while_down_and_replays_nothing(
    tmp_path: Path, smtp_server: SmtpServer
):
    write_event(tmp_path, "first", timed_event(soon(0.3), people=2))
    async with running(tmp_path, smtp_server):
        await until(lambda: len(smtp_server.messages) == 2)
        await until(lambda: set(states(tmp_path).values()) == {"sent"})
    # While down, another event falls due.
    write_event(tmp_path, "second", timed_event(soon(-60), people=1).replace("person", "late"))
    async with running(tmp_path, smtp_server):
        await until(lambda: len(smtp_server.messages) == 3)
        await asyncio.sleep(0.3)  # room for a (wrong) replay to show up
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "late00000@example.org",
        "person00000@example.org",
        "person00001@example.org",
    ]
