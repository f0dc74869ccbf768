"""A real `mailer run` killed with -9 mid-batch again and again, and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.crash_loop import crash_loop, db_states, mailer_run
from tests.project import make_project, smtp_transport, timed_event, write_event
from tests.smtpd import SmtpServer
from tests.test_service import soon, until

pytestmark = pytest.mark.timeout(90)


async def test_kill_9_again_and_again_loses_nothing_and_repeats_only_what_was_in_flight(
    tmp_path: Path, smtp_server: SmtpServer
):
    figures = await crash_loop(tmp_path, smtp_server, people=400, kills=3, seed=20261123)
    print(figures)  # the long version: make soak


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
