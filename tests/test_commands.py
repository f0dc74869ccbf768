"""`mailer send`, `retry` and `status` as operators use them, next to a running service."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import SystemClock
from mailer.commands import send_now
from mailer.config import load_settings
from mailer.delivery import DeliveryState as S
from mailer.engine import Engine
from mailer.errors import ConfigError
from mailer.logs import JsonFormatter
from mailer.message import message_id
from mailer.status import read_status
from mailer.store import MIGRATIONS, Store
from mailer.transports.maildir import MaildirTransport
from tests.project import make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer, serve_smtp
from tests.test_service import soon


async def plan(settings) -> None:  # type: ignore[no-untyped-def]
    """Plan the events into the database without sending anything, as a start would."""
    store = await Store.open(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(Path("/nonexistent")), clock=SystemClock()
    )
    await engine.plan()
    await store.close()


def states(root: Path) -> Counter[str]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return Counter(s for (s,) in db.execute("SELECT state FROM deliveries"))


async def test_send_leaves_what_the_service_has_in_flight_alone(tmp_path: Path):
    settings = load_settings(make_project(tmp_path))
    write_event(tmp_path, "seminarium", timed_event(soon(-1), people=3))
    await plan(settings)
    store = await Store.open(settings.paths.database)
    claimed, _ = await store.claim_due(SystemClock().now().timestamp(), limit=1)  # "the service"
    await store.close()
    report = await send_now(
        settings, "seminarium", "invitation", recipient=None, clock=SystemClock()
    )
    assert report.states == {S.SENT: 2} and report.all_sent
    assert states(tmp_path) == {"sent": 2, "sending": 1}  # the service's one is still its own
    with sqlite3.connect(settings.paths.database) as db:
        assert db.execute(
            "SELECT state FROM deliveries WHERE id = ?", (claimed[0].id,)
        ).fetchone() == ("sending",)


@pytest.mark.parametrize("connections", [2, 4])
async def test_send_with_a_refused_certificate_counts_each_delivery_once(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, connections: int
):
    """Sending pauses after `connections` attempts: those are retrying, the rest still
    scheduled, and the summary says so as `status` does (it once said "2 retrying, 10 still
    queued" for 10 people, counting the retrying ones twice)."""
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)
    config = make_project(
        tmp_path,
        transport=smtp_transport(smtp_server.port),  # the system store: the test CA is unknown
        connections=connections,
        backoff_first="1h",
    )
    write_event(tmp_path, "seminarium", timed_event(soon(3600), people=10))
    sent = await asyncio.to_thread(
        CliRunner().invoke, main, ["send", "-c", str(config), "seminarium", "invitation"]
    )
    assert sent.exit_code == 1, sent.output
    assert "sending paused: " in sent.stdout and "certificate" in sent.stdout
    summary = [line.split("sending paused")[0] for line in sent.stdout.splitlines()]
    printed = {s: int(n) for n, s in re.findall(r"(\d+) ([a-z]+(?: [a-z]+)?)", " ".join(summary))}
    assert sum(printed.values()) == 10, sent.stdout
    shown = await asyncio.to_thread(
        CliRunner().invoke, main, ["status", "-c", str(config), "--json"]
    )
    (event,) = json.loads(shown.stdout)["events"]
    (mail,) = event["mails"]
    assert printed == {state: n for state, n in mail["counts"].items() if n}, sent.stdout
    assert 1 <= printed["retrying"] <= connections
    assert smtp_server.messages == []


async def test_retry_gives_a_failed_delivery_a_fresh_set_of_attempts(tmp_path: Path):
    settings = load_settings(make_project(tmp_path))
    write_event(tmp_path, "seminarium", timed_event(soon(-1), people=1))
    await plan(settings)
    with sqlite3.connect(settings.paths.database) as db:
        db.execute("UPDATE deliveries SET state = 'failed', attempts = 10, first_attempt = 1")
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["retry", "-c", str(tmp_path / "config.toml"), "seminarium"]
    )
    assert "1 failed deliveries queued again" in result.output
    with sqlite3.connect(settings.paths.database) as db:
        assert db.execute("SELECT state, attempts, first_attempt FROM deliveries").fetchall() == [
            ("scheduled", 0, None)
        ]


async def test_status_before_the_first_run_says_so_and_creates_nothing(tmp_path: Path):
    settings = load_settings(make_project(tmp_path))
    with pytest.raises(ConfigError, match=r"no database at .*\(mailer run creates it\)"):
        await read_status(settings, event_id=None, mail=None)
    assert not settings.paths.database.exists()


async def test_a_database_from_a_newer_mailer_is_refused(tmp_path: Path):
    path = tmp_path / "mailer.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(ConfigError, match="from a newer mailer"):
        await Store.open(path)


def test_status_shows_bracketed_words_of_an_error_as_they_are(tmp_path: Path):
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    asyncio.run(plan(load_settings(config)))
    source.write_text(source.read_text().replace('to = ["registered"]', 'to = ["registerd"]'))
    asyncio.run(plan(load_settings(config)))
    table = CliRunner().invoke(main, ["status", "-c", str(config)])
    assert "declare a group nobody is in yet in [recipients] groups" in table.output
    assert "the last valid version is in force" in table.output


def test_send_to_someone_who_does_not_get_the_mail_says_so(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    result = CliRunner().invoke(
        main, ["send", "-c", str(config), "forlabb", "reminder", "--recipient", "anna@exampel.org"]
    )
    assert result.exit_code == 1
    assert "anna@exampel.org does not get this mail (to: registered)" in result.output


def test_log_lines_carry_the_time_in_the_events_zone_with_its_offset(tmp_path: Path):
    """Status shows times in `sender.timezone`; the log says the same clock, offset shown."""
    config = make_project(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[sender]\n", '[sender]\ntimezone = "Asia/Kolkata"\n'))
    write_event(tmp_path, "seminarium", timed_event(soon(-1), people=1))
    result = CliRunner().invoke(main, ["send", "-c", str(config), "seminarium", "invitation"])
    assert result.exit_code == 0, result.output
    sent = [line for line in result.stderr.splitlines() if "seminarium/invitation to" in line]
    assert sent and re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30 INFO mailer: seminarium/invitation", sent[0]
    ), sent


def test_json_log_lines_carry_an_iso_time_with_offset():
    record = logging.LogRecord("mailer", logging.INFO, __file__, 1, "sent", None, None)
    record.created = 1.9e9
    line = json.loads(JsonFormatter(ZoneInfo("Europe/Stockholm")).format(record))
    assert line["time"] == "2030-03-17T18:46:40.000+01:00"


def test_an_event_valid_again_says_so_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = load_settings(make_project(tmp_path))
    source = write_event(tmp_path, "forlabb")
    valid = source.read_text(encoding="utf-8")
    asyncio.run(plan(settings))
    source.write_text(valid.replace('to = ["registered"]', 'to = ["registerd"]'))
    asyncio.run(plan(settings))
    caplog.set_level(logging.INFO, logger="mailer")
    assert "valid again" not in caplog.text
    source.write_text(valid)
    asyncio.run(plan(settings))
    assert "forlabb: valid again, this version is now in force" in caplog.text


@pytest.mark.parametrize("with_auth", [True, False], ids=["starttls+auth", "plain, no auth"])
async def test_a_test_send_goes_to_the_given_address_alone_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_auth: bool
):
    """SPEC §10: rendered as the recipient named (Björn reads English), "[TEST] " before the
    subject, one message to the tester only, a Message-ID of its own, no delivery recorded."""
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)
    options = {} if with_auth else {"starttls": False, "auth_required": False}
    async with serve_smtp(**options) as server:
        if with_auth:
            server.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
            transport = smtp_transport(server.port) + 'ca_file = "ca.pem"\n'
        else:
            transport = smtp_transport(server.port, security="none").replace(
                'username = "mailer"\n', ""
            )
        config = make_project(tmp_path, transport=transport)
        write_event(tmp_path, "forlabb")
        args = ["send", "-c", str(config), "forlabb", "invitation", "--test", "Me@Example.org"]
        result = await asyncio.to_thread(
            CliRunner().invoke, main, [*args, "--recipient", "bjorn@example.org"]
        )
        assert result.exit_code == 0, result.output
        assert "test mail sent to Me@example.org, as bjorn@example.org" in result.stdout
        (received,) = server.messages
        assert received.rcpt_tos == ("Me@example.org",)
        assert received.login == ("mailer" if with_auth else None)
        message = message_from_bytes(received.content, policy=policy.SMTP)
        assert message["Subject"].startswith("[TEST] Invitation: Förlabb: Skolnärvaro")
        assert message["To"] == "Me@example.org"
        assert "Dear Björn Östlund" in message.get_body(("plain",)).get_content()
        assert any(p.get_filename() == "forlabb.ics" for p in message.iter_attachments())
        real = message_id("forlabb", "invitation", "me@example.org", domain="example.org")
        assert message["Message-ID"] != real
        assert not (tmp_path / "var" / "mailer.sqlite3").exists()  # nothing recorded
        assert re.search(r"test mail forlabb/invitation as bjorn@example.org to Me@", result.stderr)
        monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)  # taken from the environment once read
        first = await asyncio.to_thread(CliRunner().invoke, main, args)  # the first recipient
        assert first.exit_code == 0, first.output
        assert "as anna@example.org" in first.stdout
        assert "Anna Andersson" in server.messages[1].content.decode("utf-8", "replace")


def test_a_test_send_to_no_address_is_a_usage_error(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    result = CliRunner().invoke(
        main, ["send", "-c", str(config), "forlabb", "invitation", "--test", "me-at-example"]
    )
    assert result.exit_code == 2
    assert "'me-at-example' is not an email address" in result.output
    assert not (tmp_path / "var" / "maildir").exists()
