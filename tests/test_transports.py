"""One contract, both transports: concurrent sends each arrive once, intact, to one recipient."""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailer.delivery import Verdict
from mailer.transports.base import Transport
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport
from tests.smtpd import serve_smtp, smtp_settings

MESSAGE = (
    b"From: a@example.org\r\nTo: {to}\r\nSubject: =?utf-8?q?Sm=C3=B6rg=C3=A5s?=\r\n"
    b"Message-ID: <{n}@example.org>\r\n\r\n.leading dot\r\nHej!\r\n"
)


@asynccontextmanager
async def maildir(tmp_path: Path) -> AsyncIterator[tuple[Transport, Callable[[], list[bytes]]]]:
    transport = MaildirTransport(tmp_path / "fresh" / "maildir")  # not there yet: created on use
    yield transport, lambda: [bytes(m) for m in mailbox.Maildir(transport.path, create=False)]
    await transport.close()


@asynccontextmanager
async def smtp(tmp_path: Path) -> AsyncIterator[tuple[Transport, Callable[[], list[bytes]]]]:
    async with serve_smtp() as server:
        transport = SmtpTransport(
            smtp_settings(server),
            connections=4,
            max_per_minute=0,
            tls_context=server.client_context(),
        )
        yield transport, lambda: [m.content for m in server.messages]
        await transport.close()


@pytest.mark.parametrize("open_transport", [maildir, smtp], ids=["maildir", "smtp"])
async def test_concurrent_sends_each_arrive_once(tmp_path: Path, open_transport):
    async with open_transport(tmp_path) as (transport, delivered):
        outcomes = await asyncio.gather(
            *(
                transport.send(
                    bytes(MESSAGE)
                    .replace(b"{to}", f"p{n}@example.org".encode())
                    .replace(b"{n}", str(n).encode()),
                    sender="a@example.org",
                    recipient=f"p{n}@example.org",
                )
                for n in range(12)
            )
        )
        assert [o.verdict for o in outcomes] == [Verdict.SENT] * 12
        messages = [message_from_bytes(raw, policy=policy.default) for raw in delivered()]
    assert sorted(m["Message-ID"] for m in messages) == sorted(
        f"<{n}@example.org>" for n in range(12)
    )
    assert {m["Subject"] for m in messages} == {"Smörgås"}
    assert all(".leading dot" in m.get_content() for m in messages)


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_every_security_mode_without_auth_says_ehlo_and_sends_smtputf8(security: str):
    """An internal relay trusted by IP takes mail with no login: the session must still open
    with EHLO, or the client knows no SIZE and no SMTPUTF8 and fails björn for good."""
    address = "björn@example.org"
    message = bytes(MESSAGE).replace(b"{to}", address.encode()).replace(b"{n}", b"1")
    async with serve_smtp(
        starttls=security == "starttls",
        implicit_tls=security == "tls",
        auth_required=False,
        smtputf8=True,
    ) as server:
        settings = smtp_settings(
            server, security=security, username=None, password_env=None, password=None
        )
        transport = SmtpTransport(
            settings, connections=1, max_per_minute=0, tls_context=server.client_context()
        )
        outcome = await transport.send(message, sender="a@example.org", recipient=address)
        await transport.close()

    assert outcome.verdict is Verdict.SENT, outcome.reply
    (received,) = server.messages
    assert received.rcpt_tos == (address,)
    assert (received.tls, received.login) == (security != "none", None)
    assert sorted(received.mail_options) == [f"SIZE={len(message)}", "SMTPUTF8"]


async def test_the_maildir_keeps_each_messages_envelope_sender_as_its_return_path(tmp_path: Path):
    async with maildir(tmp_path) as (transport, delivered):
        for n in range(2):
            message = MESSAGE.replace(b"{to}", b"p@example.org").replace(b"{n}", str(n).encode())
            await transport.send(message, sender=f"bounces+{n}-x@example.org", recipient="p")
        found = [message_from_bytes(raw, policy=policy.default) for raw in delivered()]
    assert sorted(str(m["Return-Path"]) for m in found) == [
        "<bounces+0-x@example.org>",
        "<bounces+1-x@example.org>",
    ]
    assert all(m["Subject"] == "Smörgås" for m in found)
