"""Bounces (SPEC §11): each delivery's own envelope sender, and real delivery status
notifications (tests/bounces/, each with its source noted) read from a real Maildir."""

from __future__ import annotations

import asyncio
import imaplib
import json
import shutil
import sqlite3
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.bounces import BounceReader
from mailer.cli import main
from mailer.clock import ManualClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.keyring import Keyring
from mailer.store import Store
from mailer.transports.base import Transport
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport
from tests.dovecot import MAILBOX_USER, ImapServer, running_dovecot
from tests.dovecot import PASSWORD as IMAP_PASSWORD
from tests.project import make_project, timed_event, write_event
from tests.smtpd import SmtpServer, serve_smtp, smtp_settings
from tests.test_engine import STOCKHOLM

FIXTURES = Path(__file__).parent / "bounces"
BOUNCES = '\n[bounces]\naddress = "bounces@example.org"\npath = "var/bounces"\n'
DUE = "2027-05-26T09:00:00"
PEOPLE = 8


def project(root: Path) -> Path:
    config = make_project(root)
    config.write_text(config.read_text() + BOUNCES)
    write_event(root, "seminar", timed_event(DUE, people=PEOPLE))
    return config


@asynccontextmanager
async def sent_engine(root: Path, transport: Transport | None = None) -> AsyncIterator[Engine]:
    """The seminar's invitation sent to everyone (over SMTP, or into the outgoing Maildir)."""
    settings = load_settings(root / "config.toml", needs_password=False)
    store = await Store.open(settings.paths.database)
    transport = transport or MaildirTransport(root / "var" / "maildir")
    clock = ManualClock(datetime(2027, 5, 26, 9, 1, tzinfo=STOCKHOLM))
    engine = Engine(settings, store=store, transport=transport, clock=clock)
    try:
        await engine.load_all()
        await engine.step()
        yield engine
    finally:
        await engine.close()
        await store.close()


def deliveries(root: Path) -> dict[str, tuple[int, str, str | None]]:
    """recipient -> (id, state, last reply)."""
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        rows = db.execute("SELECT recipient, id, state, last_reply FROM deliveries")
        return {recipient: (id_, state, reply) for recipient, id_, state, reply in rows}


def attempts_of(root: Path, delivery: int) -> list[tuple[str, int | None]]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        rows = db.execute(
            "SELECT verdict, code FROM attempts WHERE delivery = ? ORDER BY id", (delivery,)
        )
        return list(rows)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def drop(root: Path, fixture: str, *, to: str, name: str) -> Path:
    """A notice as the relay's local delivery writes it: Delivered-To on top (Postfix)."""
    new = root / "var" / "bounces" / "new"
    new.mkdir(parents=True, exist_ok=True)
    path = new / name
    path.write_bytes(f"Delivered-To: {to}\n".encode() + (FIXTURES / fixture).read_bytes())
    return path


async def test_each_delivery_goes_out_from_its_own_signed_bounce_address(tmp_path: Path):
    project(tmp_path)
    async with serve_smtp() as server:
        transport = SmtpTransport(
            smtp_settings(server),
            tls_context=server.client_context(),
            connections=1,
            max_per_minute=0,
        )
        async with sent_engine(tmp_path, transport) as engine:
            check_envelopes(tmp_path, engine, server)


def check_envelopes(root: Path, engine: Engine, server: SmtpServer) -> None:
    keyring = engine.sender.keyring
    assert keyring is not None
    by_recipient = {r.rcpt_tos[0]: r for r in server.messages}
    assert len(by_recipient) == PEOPLE
    sent = deliveries(root)
    for recipient, (delivery, state, _) in sent.items():
        received = by_recipient[recipient]
        assert state == "sent"
        assert received.mail_from == keyring.envelope_sender("bounces@example.org", delivery)
        assert received.mail_from.startswith(f"bounces+{delivery}-")
        headers = message_from_bytes(received.content, policy=policy.default)
        assert headers["From"].addresses[0].addr_spec == "samhallskontraktet@example.org"
        assert "bounces" not in str(headers["Reply-To"] or "")
    # Whoever saw one bounce address can neither write another delivery's nor guess one.
    one, other = sent["person00000@example.org"][0], sent["person00001@example.org"][0]
    mac = by_recipient["person00000@example.org"].mail_from.split("-", 1)[1].split("@")[0]
    forged = f"bounces+{other}-{mac}@example.org"
    assert keyring.delivery_of(forged, bounce_address="bounces@example.org") is None
    mine = keyring.envelope_sender("bounces@example.org", one)
    assert keyring.delivery_of(mine.upper(), bounce_address="bounces@example.org") == one
    assert Keyring(b"x" * 32).delivery_of(mine, bounce_address="bounces@example.org") is None


NOTICES = [  # fixture, what the delivery becomes, its reply starts with, the SMTP code
    ("postfix-failed.eml", "bounced", "5.0.0 host mx.dom.ain[192.168.1.100] said: 550", 550),
    ("exchange-failed.eml", "bounced", "5.1.1 (failed)", None),
    ("exchange-ims-failed.eml", "bounced", "5.0.0 Undeliverable: RE: Waiver", None),
    ("gmail-failed.eml", "bounced", "5.0.0 Delivery Status Notification (Failure)", None),
    ("postfix-delayed.eml", "sent", "written to", None),
    ("gmail-delayed.eml", "sent", "written to", None),
]


async def test_real_notices_bounce_or_delay_their_delivery_once_across_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    project(tmp_path)
    async with sent_engine(tmp_path) as engine:
        keyring = engine.sender.keyring
        assert keyring is not None
        sent = deliveries(tmp_path)
        people = sorted(sent)
        for (fixture, *_), person in zip(NOTICES, people, strict=False):
            to = keyring.envelope_sender("bounces@example.org", sent[person][0])
            drop(tmp_path, fixture, to=to, name=f"{fixture}.1")
        forged_to = keyring.envelope_sender("bounces@example.org", sent[people[6]][0])
        local = forged_to[: -len("@example.org")]
        other = "b" if local.endswith("a") else "a"  # one letter off, never the same letter
        forged_to = f"{local[:-1]}{other}@example.org"
        forged = drop(tmp_path, "postfix-failed.eml", to=forged_to, name="forged.1")
        unrelated = drop(tmp_path, "postfix-failed.eml", to="info@example.org", name="other.1")
        reader = BounceReader(
            engine.settings.bounces, store=engine.store, keyring=keyring, clock=engine.clock
        )
        counts = await reader.read_once()
        assert counts == {"bounced": 4, "delayed": 2, "unmatched": 2}
        await reader.read_once()  # left alone, and said only once
        assert sum("left alone" in r.message for r in caplog.records) == 2

    after = deliveries(tmp_path)
    for (fixture, state, reply, code), person in zip(NOTICES, people, strict=False):
        delivery, found_state, found_reply = after[person]
        assert (fixture, found_state) == (fixture, state)
        assert (found_reply or "").startswith(reply), (fixture, found_reply)
        verdicts = attempts_of(tmp_path, delivery)
        assert verdicts[-1] == ("bounced" if state == "bounced" else "delayed", code)
    assert after[people[6]][1] == "sent"  # the forged token bounced nobody
    assert forged.exists() and unrelated.exists()
    cur = sorted(p.name for p in (tmp_path / "var" / "bounces" / "cur").iterdir())
    assert cur == sorted(f"{fixture}.1:2,S" for fixture, *_ in NOTICES)

    # A crash after recording but before the move: the notice is in new/ again at start.
    shutil.copy(
        tmp_path / "var" / "bounces" / "cur" / "postfix-failed.eml.1:2,S",
        tmp_path / "var" / "bounces" / "new" / "postfix-failed.eml.1",
    )
    settings = load_settings(tmp_path / "config.toml")
    store = await Store.open(settings.paths.database)
    try:
        assert settings.bounces is not None
        reader = BounceReader(
            settings.bounces, store=store, keyring=keyring, clock=ManualClock(engine.clock.now())
        )
        assert (await reader.read_once())["seen"] == 1
    finally:
        await store.close()
    assert attempts_of(tmp_path, after[people[0]][0]) == attempts_of(tmp_path, sent[people[0]][0])
    assert len(attempts_of(tmp_path, after[people[0]][0])) == 2  # sent, bounced: once


async def bounce_one(tmp_path: Path) -> None:
    async with sent_engine(tmp_path) as engine:
        keyring = engine.sender.keyring
        assert keyring is not None
        delivery = deliveries(tmp_path)["person00000@example.org"][0]
        to = keyring.envelope_sender("bounces@example.org", delivery)
        drop(tmp_path, "postfix-failed.eml", to=to, name="one")
        assert engine.settings.bounces is not None
        reader = BounceReader(
            engine.settings.bounces, store=engine.store, keyring=keyring, clock=engine.clock
        )
        await reader.read_once()


def test_status_counts_bounced_and_shows_the_diagnostic_per_recipient(tmp_path: Path):
    project(tmp_path)
    asyncio.run(bounce_one(tmp_path))
    config = str(tmp_path / "config.toml")
    result = CliRunner().invoke(main, ["-c", config, "status", "--json", "seminar", "invitation"])
    assert result.exit_code == 0, result.output
    (mail,) = json.loads(result.output)["events"][0]["mails"]
    assert mail["counts"]["bounced"] == 1 and mail["counts"]["sent"] == PEOPLE - 1
    (row,) = [d for d in mail["deliveries"] if d["state"] == "bounced"]
    assert row["recipient"] == "person00000@example.org"
    assert "User unknown" in row["last_reply"]
    table = CliRunner().invoke(main, ["-c", config, "status", "seminar", "invitation"])
    assert "bounced" in table.output and "550" in table.output, table.output


def imap_config(root: Path, server: ImapServer) -> None:
    """[bounces] read from the test's Dovecot over TLS, its CA trusted through ca_file."""
    config = root / "config.toml"
    text = config.read_text().replace(BOUNCES, "")
    config.write_text(
        text
        + f"""
[bounces]
address = "bounces@example.org"
kind = "imap"
host = "127.0.0.1"
port = {server.port}
username = "{MAILBOX_USER}"
password_env = "MAILER_BOUNCES_PASSWORD"
folder = "INBOX"
ca_file = "{server.ca_file}"
"""
    )


def unseen(server: ImapServer) -> list[bytes]:
    """The subjects of the messages still unread, as another mail client would see them."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context) as session:
        session.login(MAILBOX_USER, IMAP_PASSWORD)
        session.select("INBOX", readonly=True)
        _, (uids,) = session.uid("SEARCH", "UNSEEN")
        return list(uids.split())


def mark_unseen(server: ImapServer) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context) as session:
        session.login(MAILBOX_USER, IMAP_PASSWORD)
        session.select("INBOX")
        session.uid("STORE", "1:*", "-FLAGS", r"(\Seen)")


async def test_notices_are_read_over_imap_with_tls_and_marked_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project(tmp_path)
    async with sent_engine(tmp_path) as engine:
        keyring = engine.sender.keyring
        assert keyring is not None
        sent = deliveries(tmp_path)
        anna, bo, cy = sorted(sent)[:3]
    with running_dovecot() as server:
        imap_config(tmp_path, server)
        to = keyring.envelope_sender("bounces@example.org", sent[anna][0])
        server.deliver("1.a", f"Delivered-To: {to}\n".encode() + fixture("postfix-failed.eml"))
        to = keyring.envelope_sender("bounces@example.org", sent[bo][0])
        server.deliver("2.b", f"Delivered-To: {to}\n".encode() + fixture("gmail-delayed.eml"))
        server.deliver("3.c", b"Delivered-To: info@example.org\n" + fixture("postfix-failed.eml"))
        monkeypatch.setenv("MAILER_BOUNCES_PASSWORD", IMAP_PASSWORD)
        settings = load_settings(tmp_path / "config.toml")
        assert settings.bounces is not None and settings.bounces.kind == "imap"
        store = await Store.open(settings.paths.database)
        try:
            reader = BounceReader(
                settings.bounces, store=store, keyring=keyring, clock=ManualClock(datetime.now(UTC))
            )
            assert await reader.read_once() == {"bounced": 1, "delayed": 1, "unmatched": 1}
            assert len(await asyncio.to_thread(unseen, server)) == 1  # the unrelated one
            await asyncio.to_thread(mark_unseen, server)  # as if the marks were lost
            assert (await reader.read_once())["seen"] == 2  # recorded once, marked again
        finally:
            await store.close()
    after = deliveries(tmp_path)
    assert after[anna][1] == "bounced" and "User unknown" in (after[anna][2] or "")
    assert (after[bo][1], after[cy][1]) == ("sent", "sent")
    assert [v for v, _ in attempts_of(tmp_path, sent[anna][0])] == ["sent", "bounced"]
