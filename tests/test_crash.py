"""A real `mailer run` killed with -9 mid-batch again and again, and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import icalendar
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


async def test_kill_9_while_updates_go_out_loses_none_and_repeats_only_what_was_in_flight(
    tmp_path: Path, smtp_server: SmtpServer
):
    """SPEC §10: notices are deliveries like any other; and their round is announced once."""
    people, kills, connections = 100, 2, 2
    make_project(tmp_path, transport=smtp_transport(smtp_server.port), connections=connections)
    config = tmp_path / "config.toml"
    config.write_text(
        config.read_text().replace("[sending]\n", '[sending]\nchange_settle = "1s"\n')
    )
    event = timed_event(soon(0), people=people).replace(
        'to = ["all"]', 'to = ["all"]\ncalendar = true'
    )
    source = write_event(tmp_path, "seminarium", event)
    async with mailer_run(tmp_path, smtp_server) as process:
        await until(lambda: len(smtp_server.messages) >= people, timeout_s=60)
        await until(lambda: db_states(tmp_path) == {"sent": people}, timeout_s=10)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    source.write_text(event.replace("2099-06-16T09:00:00", "2099-06-17T13:00:00"))

    sequences: list[int | None] = []  # of the messages received, parsed once each

    def updates() -> list[str]:
        """The recipients of updates so far (parsing on the test's loop, which the server
        shares: each message once, or the server stops answering in time)."""
        new = smtp_server.messages[len(sequences) :]
        sequences.extend(sequence_of(m.content) for m in new)
        received = zip(smtp_server.messages, sequences, strict=False)
        return [m.rcpt_tos[0] for m, sequence in received if sequence == 1]

    for target in (people // 3, people * 2 // 3):
        async with mailer_run(tmp_path, smtp_server) as process:
            await until(lambda t=target: len(updates()) >= t, timeout_s=60)
            process.kill()
            await process.wait()
    async with mailer_run(tmp_path, smtp_server) as process:
        await until(lambda: db_states(tmp_path) == {"sent": 2 * people}, timeout_s=60)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    received = Counter(updates())
    assert len(received) == people, "an update was lost"
    assert sum(received.values()) - people <= kills * connections
    updates()
    assert set(sequences) == {0, 1}  # one round: nobody got a SEQUENCE 2


def sequence_of(raw: bytes) -> int | None:
    """The SEQUENCE of the message's calendar file (base64 in the message), if it has one."""
    message = message_from_bytes(raw, policy=policy.default)
    for part in message.iter_attachments():
        if part.get_content_type() == "text/calendar":
            return int(
                icalendar.Calendar.from_ical(part.get_content()).walk("VEVENT")[0]["SEQUENCE"]
            )
    return None
