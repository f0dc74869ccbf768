"""transports/smtp.py against a real aiosmtpd server in the test's loop; faults set server-side."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailer.config_transport import SmtpSettings
from mailer.delivery import Outcome, Verdict
from mailer.transports.masking import MASK, scrub
from mailer.transports.smtp import SmtpTransport
from mailer.transports.smtp_faults import NO_STARTTLS
from tests.smtpd import BUSY_REPLY, USERNAME, Received, SmtpServer, serve_smtp, smtp_settings

pytestmark = pytest.mark.timeout(10)

SENDER = "info@example.org"
ANNA = "anna@example.org"


def build_message(recipient: str = ANNA, number: int = 1) -> bytes:
    """A small message whose body has a leading dot and non-ASCII, both of which must survive."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = f"Påminnelse {number}"
    message["Message-ID"] = f"<{number}.{recipient}>"
    message.set_content(f"Hej!\n.en rad som börjar med punkt\n..och två\nnr {number}\n")
    return message.as_bytes()


@asynccontextmanager
async def transport_for(
    server: SmtpServer, settings: SmtpSettings | None = None, *, trust: bool = True, **options: Any
) -> AsyncIterator[SmtpTransport]:
    """A transport for `server`, trusting its CA unless `trust=False`; closed at the end."""
    options = {"connections": 1, "max_per_minute": 0} | options
    context = server.client_context() if trust else None
    transport = SmtpTransport(settings or smtp_settings(server), tls_context=context, **options)
    try:
        yield transport
    finally:
        await transport.close()


async def send(transport: SmtpTransport, recipient: str = ANNA, number: int = 1) -> Outcome:
    message = build_message(recipient, number)
    return await transport.send(message, sender=SENDER, recipient=recipient)


async def test_starttls_and_auth_deliver_the_bytes_intact(smtp_server: SmtpServer) -> None:
    async with transport_for(smtp_server) as transport:
        outcome = await send(transport)

    assert outcome == Outcome(Verdict.SENT, "250 2.0.0 OK: queued", 250)
    assert smtp_server.messages == [
        Received(
            mail_from=SENDER,
            rcpt_tos=(ANNA,),
            content=build_message(),
            message_id=f"<1.{ANNA}>",
            tls=True,
            login=USERNAME,
            mail_options=(f"SIZE={len(build_message())}",),  # the size as it went on the wire
        )
    ]


async def test_implicit_tls_delivers() -> None:
    async with serve_smtp(implicit_tls=True) as server, transport_for(server) as transport:
        outcome = await send(transport)

    assert outcome.verdict is Verdict.SENT
    assert [(m.tls, m.login, m.content) for m in server.messages] == [
        (True, USERNAME, build_message())
    ]


async def test_an_untrusted_certificate_is_refused(smtp_server: SmtpServer) -> None:
    async with transport_for(smtp_server, trust=False) as transport:
        outcome = await send(transport)

    assert outcome.verdict is Verdict.RETRY
    assert "certificate" in outcome.reply
    assert "validate_certs" in outcome.reply
    assert smtp_server.messages == []


async def test_validate_certs_false_accepts_an_untrusted_certificate(
    smtp_server: SmtpServer,
) -> None:
    settings = smtp_settings(smtp_server, validate_certs=False)
    async with transport_for(smtp_server, settings, trust=False) as transport:
        outcome = await send(transport)

    assert outcome.verdict is Verdict.SENT
    assert [m.tls for m in smtp_server.messages] == [True]


async def test_no_starttls_means_nothing_is_sent_in_plain_text() -> None:
    # This server would take mail in plain text without AUTH: only the transport can refuse.
    async with serve_smtp(starttls=False, auth_required=False) as server:
        async with transport_for(server) as transport:
            refused = await send(transport)
        assert server.messages == []
        settings = smtp_settings(server, security="none", username=None)
        async with transport_for(server, settings) as transport:
            plain = await send(transport)

    assert refused == Outcome(Verdict.RETRY, NO_STARTTLS, needs_attention=True)
    assert plain.verdict is Verdict.SENT
    assert [(m.tls, m.login) for m in server.messages] == [(False, None)]


async def test_a_wrong_password_retries_and_is_never_shown(
    smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "hunter2-wrong-password"
    settings = smtp_settings(smtp_server, password=wrong)
    with caplog.at_level(logging.DEBUG, logger="mailer.smtp"):
        async with transport_for(smtp_server, settings) as transport:
            outcome = await send(transport)

    assert outcome.verdict is Verdict.RETRY
    assert outcome.code == 535
    assert outcome.reply.startswith("authentication failed (535 ")
    assert "$MAILER_SMTP_PASSWORD" in outcome.reply
    assert wrong not in outcome.reply
    assert outcome.reply in caplog.text
    assert wrong not in caplog.text
    assert smtp_server.messages == []


async def test_a_wrong_password_is_tried_once_per_attempt(smtp_server: SmtpServer) -> None:
    """A relay counts every refused AUTH as a failed login, and locks the account after a
    few: a second mechanism after a 535 doubled the count (4 attempts, 8 failed logins)."""
    settings = smtp_settings(smtp_server, password="hunter2-wrong-password")
    async with transport_for(smtp_server, settings) as transport:
        outcomes = [await send(transport, number=n) for n in range(2)]

    assert [outcome.code for outcome in outcomes] == [535, 535]
    assert smtp_server.connections == 2
    assert smtp_server.auth_commands == ["PLAIN", "PLAIN"]  # offered: PLAIN and LOGIN


async def test_a_server_offering_only_login_gets_login() -> None:
    async with serve_smtp(auth_exclude=("PLAIN",)) as server, transport_for(server) as transport:
        outcome = await send(transport)

    assert outcome.verdict is Verdict.SENT
    assert server.auth_commands == ["LOGIN"]
    assert [m.login for m in server.messages] == [USERNAME]


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "tls"])
async def test_ca_file_trusts_a_private_ca(tmp_path: Path, implicit_tls: bool) -> None:
    """transport.ca_file: the relay's certificate is still verified, against that CA."""
    async with serve_smtp(implicit_tls=implicit_tls) as server:
        ca_file = tmp_path / "ca.pem"
        server.ca.cert_pem.write_to_path(str(ca_file))
        async with transport_for(server, trust=False) as transport:
            refused = await send(transport, number=1)
        settings = smtp_settings(server, ca_file=ca_file)
        async with transport_for(server, settings, trust=False) as transport:
            accepted = await send(transport, number=2)

    assert refused.verdict is Verdict.RETRY
    assert "certificate" in refused.reply
    assert accepted.verdict is Verdict.SENT, accepted.reply
    assert [(m.message_id, m.tls) for m in server.messages] == [(f"<2.{ANNA}>", True)]


async def test_451_retries_and_the_session_stays_usable(smtp_server: SmtpServer) -> None:
    smtp_server.faults.busy = 1
    async with transport_for(smtp_server) as transport:
        busy = await send(transport, number=1)
        accepted = await send(transport, number=2)

    assert busy == Outcome(Verdict.RETRY, BUSY_REPLY, 451)
    assert accepted.verdict is Verdict.SENT
    assert [m.message_id for m in smtp_server.messages] == [f"<2.{ANNA}>"]
    assert smtp_server.connections == 1


async def test_550_fails_that_recipient_only(smtp_server: SmtpServer) -> None:
    nobody = "nobody@example.org"
    smtp_server.faults.refuse = {nobody}
    async with transport_for(smtp_server) as transport:
        refused = await send(transport, nobody)
        accepted = await send(transport, ANNA)

    assert refused.verdict is Verdict.FAIL
    assert refused.code == 550
    assert refused.reply.startswith("550 5.1.1 <nobody@example.org>")
    assert accepted.verdict is Verdict.SENT
    assert [m.rcpt_tos for m in smtp_server.messages] == [(ANNA,)]
    assert smtp_server.connections == 1


async def test_a_dropped_connection_retries_and_the_next_send_reconnects(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.faults.drop_at_data = 1
    async with transport_for(smtp_server) as transport:
        dropped = await send(transport, number=1)
        accepted = await send(transport, number=2)

    assert dropped.verdict is Verdict.RETRY
    assert "closed the connection" in dropped.reply
    assert accepted.verdict is Verdict.SENT
    assert [m.message_id for m in smtp_server.messages] == [f"<2.{ANNA}>"]
    assert smtp_server.connections == 2


async def test_a_stalled_server_retries_within_the_timeout(smtp_server: SmtpServer) -> None:
    smtp_server.faults.stall_at_data = 1
    loop = asyncio.get_running_loop()
    async with transport_for(smtp_server, smtp_settings(smtp_server, timeout="1s")) as transport:
        started = loop.time()
        stalled = await send(transport, number=1)
        waited_s = loop.time() - started
        accepted = await send(transport, number=2)

    assert stalled.verdict is Verdict.RETRY
    assert "no answer from 127.0.0.1" in stalled.reply
    assert 0.9 <= waited_s < 2.5
    assert accepted.verdict is Verdict.SENT
    assert [m.message_id for m in smtp_server.messages] == [f"<2.{ANNA}>"]


async def test_a_session_the_server_dropped_while_idle_is_replaced_silently(
    smtp_server: SmtpServer,
) -> None:
    # idle_check_s=0: every reuse is checked with NOOP, whether or not the drop was seen yet.
    async with transport_for(smtp_server, idle_check_s=0) as transport:
        first = await send(transport, number=1)
        smtp_server.hang_up()
        second = await send(transport, number=2)
        third = await send(transport, number=3)

    assert [first.verdict, second.verdict, third.verdict] == [Verdict.SENT] * 3
    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 2


async def test_twenty_messages_share_two_kept_open_sessions(smtp_server: SmtpServer) -> None:
    async with transport_for(smtp_server, connections=2) as transport:
        outcomes = await asyncio.gather(
            *(send(transport, f"p{n}@example.org", n) for n in range(20))
        )

    assert {outcome.verdict for outcome in outcomes} == {Verdict.SENT}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        f"p{n}@example.org" for n in range(20)
    )
    assert smtp_server.connections == 2


async def test_max_per_minute_holds_across_sessions(smtp_server: SmtpServer) -> None:
    loop = asyncio.get_running_loop()
    async with transport_for(smtp_server, connections=2, max_per_minute=120) as transport:
        started = loop.time()
        outcomes = await asyncio.gather(*(send(transport, number=n) for n in range(4)))
        elapsed_s = loop.time() - started

    assert {outcome.verdict for outcome in outcomes} == {Verdict.SENT}
    # 120/min is one every 0.5 s with no burst: the 4th leaves 1.5 s after the first.
    assert 1.4 <= elapsed_s < 4
    assert len(smtp_server.messages) == 4


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


NUL = "\0"
PASSWORD = "s3cret-Pa55word"


@pytest.mark.parametrize(
    ("password", "quoted"),
    [
        (PASSWORD, PASSWORD),
        (PASSWORD, _b64(f"{NUL}mailer{NUL}{PASSWORD}")),
        (PASSWORD, _b64(f"mailer{NUL}mailer{NUL}{PASSWORD}")),
        (PASSWORD, _b64(f"mailer{NUL}{PASSWORD}")),
        (PASSWORD, _b64(PASSWORD)),  # the line AUTH LOGIN sent it in
        (PASSWORD, _b64(PASSWORD).rstrip("=")),
        (PASSWORD, "x" + _b64(f"{NUL}mailer{NUL}{PASSWORD}")),
        (PASSWORD, _b64(f"{NUL}mailer{NUL}{PASSWORD}")[:22]),  # 10 bytes of the password
        ("pw", _b64(f"{NUL}mailer{NUL}pw")),
        ("lösenord-ÅÄÖ", _b64(f"{NUL}mailer{NUL}lösenord-ÅÄÖ")),
    ],
    ids=[
        "plain text", "AUTH PLAIN", "PLAIN with authzid", "PLAIN without authzid",
        "AUTH LOGIN", "no padding", "misaligned run", "cut short", "short password",
        "non-ASCII password",
    ],
)  # fmt: skip
def test_the_password_is_masked_plain_and_in_base64(password: str, quoted: str) -> None:
    assert scrub(f"535 5.7.8 {quoted} is wrong", password) == f"535 5.7.8 {MASK} is wrong"


@pytest.mark.parametrize(
    "reply",
    ["250 2.0.0 OK: queued as 4XyZ12AbCdEf", "535 5.7.8 Authentication credentials invalid"],
)
def test_replies_without_the_password_are_kept_as_they_are(reply: str) -> None:
    assert scrub(reply, "s3cret-Pa55word") == reply


@pytest.mark.parametrize(
    "body",
    [
        b"one\r\n.\r\ntwo\r\n",  # a line of one dot: the end of DATA, unless stuffed
        b"one\r\n..two\r\n...three\r\n.\r\n",  # dots at the start of lines, and last
        b"one\ntwo\r\n.three\n",  # not CRLF throughout: aiosmtplib's own data() mends it
    ],
)
async def test_dots_at_the_start_of_a_line_arrive_as_sent(
    smtp_server: SmtpServer, body: bytes
) -> None:
    """DATA is dot-stuffed with bytes.replace for our CRLF messages (aiosmtplib's two regular
    expressions cost 40 % of the CPU of a report): what the server keeps is what we sent."""
    head = b"From: info@example.org\r\nTo: anna@example.org\r\nSubject: dots\r\n\r\n"
    async with transport_for(smtp_server) as transport:
        outcome = await transport.send(head + body, sender=SENDER, recipient=ANNA)
    assert outcome.verdict is Verdict.SENT, outcome
    sent = head + body
    crlf = sent.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert [m.content for m in smtp_server.messages] == [crlf]
