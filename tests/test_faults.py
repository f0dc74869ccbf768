"""A misbehaving mail server, by a seeded script: nothing lost, duplicates only where unavoidable,
and faults a person must fix (login, certificate) pause sending loudly instead of looping."""

from __future__ import annotations

import collections
import logging
import random
from pathlib import Path

import pytest

from tests.project import timed_event, write_event
from tests.smtpd import SmtpServer
from tests.test_service import db_rows, running, smtp_password, soon, states, until

pytestmark = pytest.mark.timeout(40)
__all__ = ["smtp_password"]
FAULTS = [
    "421 4.3.2 shutting down",
    "451 4.7.1 greylisted",
    "452 4.2.2 mailbox full",
    "drop",
    "drop-after",
]


@pytest.mark.parametrize("seed", [7, 2027])
async def test_a_seeded_script_of_faults_loses_nothing(
    tmp_path: Path, smtp_server: SmtpServer, seed: int
):
    rng = random.Random(seed)
    people = 12
    script = [rng.choice(FAULTS) if rng.random() < 0.5 else "ok" for _ in range(16)]
    print(f"seed {seed}: {script}")
    smtp_server.faults.script = list(script)
    write_event(tmp_path, "seminarium", timed_event(soon(0.3), people=people))
    async with running(tmp_path, smtp_server, backoff_first="1s"):
        await until(lambda: set(states(tmp_path).values()) == {"sent"}, timeout_s=30)
    received = collections.Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert len(received) == people  # everyone, at least once
    # A duplicate only where the server kept a message and hung up before saying so.
    assert sum(received.values()) - people == script.count("drop-after")
    retries = db_rows(tmp_path, "SELECT COUNT(*) FROM attempts WHERE verdict = 'retry'")
    assert retries == [(sum(step != "ok" for step in script),)]


async def test_a_refused_login_pauses_sending_and_says_what_to_fix(
    tmp_path: Path,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "not-the-password")
    write_event(tmp_path, "seminarium", timed_event(soon(0.2), people=5))
    with caplog.at_level(logging.INFO):
        async with running(tmp_path, smtp_server, backoff_first="1h"):
            await until(lambda: "retrying" in states(tmp_path).values())
            await until(lambda: "sending" not in states(tmp_path).values())
    # The sessions already in flight (2) failed their login; the rest were never tried.
    assert_paused(tmp_path, people=5, connections=2)
    (reply,) = {
        r
        for (r,) in db_rows(tmp_path, "SELECT last_reply FROM deliveries WHERE state = 'retrying'")
    }
    assert "authentication failed" in reply and "$MAILER_SMTP_PASSWORD" in reply
    assert "sending paused for 3600 s until this is fixed: authentication failed" in caplog.text
    assert smtp_server.messages == []


async def test_an_untrusted_certificate_pauses_sending_and_says_so(
    tmp_path: Path, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
):
    write_event(tmp_path, "seminarium", timed_event(soon(0.2), people=3))
    async with running(tmp_path, smtp_server, trust=False, backoff_first="1h"):
        await until(lambda: "retrying" in states(tmp_path).values())
        await until(lambda: "sending" not in states(tmp_path).values())
    assert_paused(tmp_path, people=3, connections=2)
    (reply,) = {
        r
        for (r,) in db_rows(tmp_path, "SELECT last_reply FROM deliveries WHERE state = 'retrying'")
    }
    assert "certificate" in reply and "validate_certs" in reply
    assert smtp_server.messages == []


def assert_paused(root: Path, *, people: int, connections: int) -> None:
    """At most one attempt per session in flight; the other deliveries untouched."""
    found = collections.Counter(states(root).values())
    assert 1 <= found["retrying"] <= connections
    assert found["scheduled"] == people - found["retrying"]
    assert db_rows(root, "SELECT COUNT(*) FROM attempts") == [(found["retrying"],)]
