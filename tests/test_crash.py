"""A real `mailer run` process killed with -9 mid-batch, and stopped with SIGTERM mid-send."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.project import REPO, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer
from tests.test_service import soon, until

pytestmark = pytest.mark.timeout(60)
CONNECTIONS = 4


@asynccontextmanager
async def mailer_run(root: Path, server: SmtpServer) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m mailer run` in its own process, trusting the test CA like a system CA."""
    ca_file = root / "ca.pem"
    server.ca.cert_pem.write_to_path(str(ca_file))
    env = {
        **os.environ,
        "MAILER_SMTP_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(ca_file),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "mailer", "run", "-c", str(root / "config.toml")]
    with (root / "log.txt").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL, stderr=log
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def db_states(root: Path) -> collections.Counter[str]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return collections.Counter(s for (s,) in db.execute("SELECT state FROM deliveries"))


async def test_kill_9_mid_batch_loses_nothing_and_repeats_at_most_what_was_in_flight(
    tmp_path: Path, smtp_server: SmtpServer
):
    people = 300
    make_project(tmp_path, transport=smtp_transport(smtp_server.port), connections=CONNECTIONS)
    write_event(tmp_path, "seminarium", timed_event(soon(0), people=people))
    async with mailer_run(tmp_path, smtp_server) as process:
        await until(lambda: len(smtp_server.messages) >= 60, timeout_s=20)
        process.kill()  # SIGKILL: no clean-up of any kind
        await process.wait()
    received_at_kill = len(smtp_server.messages)
    assert received_at_kill < people, "the kill came too late to prove anything"
    async with mailer_run(tmp_path, smtp_server) as process:
        await until(lambda: db_states(tmp_path) == {"sent": people}, timeout_s=30)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    received = collections.Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert len(received) == people  # everyone got it
    duplicates = sum(received.values()) - people
    print(f"kill -9 after {received_at_kill} of {people} received; {duplicates} duplicates")
    assert duplicates <= CONNECTIONS, (
        f"{duplicates} duplicates; at most the {CONNECTIONS} in flight"
    )


async def test_sigterm_mid_send_exits_0_within_the_grace_and_keeps_the_queue(
    tmp_path: Path, smtp_server: SmtpServer
):
    make_project(tmp_path, transport=smtp_transport(smtp_server.port), connections=2)
    write_event(tmp_path, "seminarium", timed_event(soon(0), people=10))
    smtp_server.faults.stall_at_data = 100  # every send hangs at DATA
    async with mailer_run(tmp_path, smtp_server) as process:
        await until(lambda: smtp_server.connections >= 2, timeout_s=20)
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        assert asyncio.get_running_loop().time() - started < 3 + 2  # shutdown_grace = 3s
    assert db_states(tmp_path)["sending"] == 0  # nothing left half-claimed
    assert sum(db_states(tmp_path).values()) == 10  # nothing lost: all still to go
    assert "stopped" in (tmp_path / "log.txt").read_text()
