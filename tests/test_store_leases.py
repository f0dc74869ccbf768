"""Leases between real processes (SPEC §9): a `mailer run` that starts while a `mailer send`
is sending leaves the sender's deliveries alone, so nobody gets the mail twice."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.clock import ManualClock
from mailer.config import load_settings
from mailer.config_transport import SmtpSettings
from mailer.engine import Engine
from mailer.store import LEASE_S, Store
from mailer.transports.smtp import SmtpTransport
from tests.crash_loop import db_states, mailer_run
from tests.project import REPO, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer
from tests.test_service import smtp_password, until

pytestmark = pytest.mark.timeout(60)
__all__ = ["smtp_password"]
PEOPLE = 3
DUE = datetime(2099, 1, 1, 9, tzinfo=UTC)


def slow_server_project(root: Path, server: SmtpServer, *, people: int) -> None:
    """One event, due in 2099, over a server that may be slow: the client waits out its
    stalls (STALL_S) rather than giving up."""
    transport = smtp_transport(server.port).replace('timeout = "3s"', 'timeout = "20s"')
    make_project(root, transport=transport, connections=1)
    write_event(root, "seminarium", timed_event("2099-01-01T09:00:00Z", people=people))


async def test_a_starting_service_leaves_a_live_mailer_sends_deliveries_alone(
    tmp_path: Path, smtp_server: SmtpServer
):
    slow_server_project(tmp_path, smtp_server, people=PEOPLE)  # only `send` makes it due now
    smtp_server.faults.stall_at_data = 2  # the sender is slow: two messages take 5 s each
    sender = await mailer_send(tmp_path, smtp_server, "seminarium", "invitation")
    try:
        await until(lambda: sending(tmp_path) == PEOPLE, timeout_s=20)
        async with mailer_run(tmp_path, smtp_server) as service:
            await until(lambda: "running:" in (tmp_path / "log.txt").read_text(), timeout_s=20)
            assert sender.returncode is None, "the service started after the send was over"
            assert await asyncio.wait_for(sender.wait(), timeout=30) == 0
            await asyncio.sleep(2.5)  # a poll of the service's (POLL_S): it finds nothing
            service.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(service.wait(), timeout=10) == 0
    finally:
        if sender.returncode is None:
            sender.kill()
            await sender.wait()
    received = collections.Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert received == {f"person{i:05d}@example.org": 1 for i in range(PEOPLE)}
    assert db_states(tmp_path) == {"sent": PEOPLE}
    log = (tmp_path / "log.txt").read_text()
    assert "go out again" not in log and "Traceback" not in log


async def test_a_step_renews_its_leases_while_it_sends(
    tmp_path: Path, smtp_server: SmtpServer, smtp_password: None
):
    slow_server_project(tmp_path, smtp_server, people=1)
    settings = load_settings(tmp_path / "config.toml")
    assert isinstance(settings.transport, SmtpSettings)
    clock = ManualClock(DUE)
    store = await Store.open(settings.paths.database)
    other = await Store.open(settings.paths.database)  # another node: a service starting
    transport = SmtpTransport(
        settings.transport,
        connections=1,
        max_per_minute=0,
        tls_context=smtp_server.client_context(),
    )
    engine = Engine(settings, store=store, transport=transport, clock=clock)
    engine.sender.heartbeat_s = 0.05
    smtp_server.faults.stall_at_data = 1
    try:
        await engine.catalog.load_all()
        step = asyncio.create_task(engine.step())
        await until(lambda: sending(tmp_path) == 1, timeout_s=10)
        clock.advance(timedelta(seconds=3 * LEASE_S))  # the message takes long to go out
        await asyncio.sleep(0.5)  # ten beats
        assert await other.claim_due(clock.now().timestamp(), limit=5) == ([], 0)
        assert (await asyncio.wait_for(step, timeout=20)).handled == 1
    finally:
        await transport.close()
        await other.close()
        await store.close()
    assert [m.rcpt_tos for m in smtp_server.messages] == [("person00000@example.org",)]


async def test_a_long_send_pass_leases_from_now_not_from_when_it_began(
    tmp_path: Path, smtp_server: SmtpServer, smtp_password: None
):
    """`mailer send` claims what was due when it began (`due_by`); a batch claimed later in a
    long pass was leased from that instant, already run out, and a starting service took it
    back and sent it again (found in review)."""
    slow_server_project(tmp_path, smtp_server, people=1)
    settings = load_settings(tmp_path / "config.toml")
    assert isinstance(settings.transport, SmtpSettings)
    clock = ManualClock(DUE + timedelta(seconds=3 * LEASE_S))  # the pass began long ago
    store = await Store.open(settings.paths.database)
    other = await Store.open(settings.paths.database)
    transport = SmtpTransport(
        settings.transport,
        connections=1,
        max_per_minute=0,
        tls_context=smtp_server.client_context(),
    )
    engine = Engine(settings, store=store, transport=transport, clock=clock)
    engine.sender.heartbeat_s = 1000.0  # no beat comes to the rescue in this test
    smtp_server.faults.stall_at_data = 1
    try:
        await engine.catalog.load_all()
        step = asyncio.create_task(engine.step(due_by=DUE.timestamp()))
        await until(lambda: sending(tmp_path) == 1, timeout_s=10)
        assert await other.claim_due(clock.now().timestamp(), limit=5) == ([], 0)
        assert (await asyncio.wait_for(step, timeout=20)).handled == 1
    finally:
        await transport.close()
        await other.close()
        await store.close()
    assert [m.rcpt_tos for m in smtp_server.messages] == [("person00000@example.org",)]


def sending(root: Path) -> int:
    """How many deliveries are being sent; 0 while the database is not there yet."""
    try:
        return db_states(root)["sending"]
    except sqlite3.Error:
        return 0


async def mailer_send(
    root: Path, server: SmtpServer, event: str, mail: str
) -> asyncio.subprocess.Process:
    """`python -m mailer send` in its own process, as `mailer_run` starts the service."""
    ca_file = root / "ca.pem"
    server.ca.cert_pem.write_to_path(str(ca_file))
    env = {
        **os.environ,
        "MAILER_SMTP_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(ca_file),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "mailer", "send", "-c", str(root / "config.toml")]
    with (root / "send.txt").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *command,
            event,
            mail,
            cwd=root,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
