"""A real aiosmtpd server in the test's own loop, with trustme certificates and scripted faults.

Every SMTP test of the suite talks to this server: `async with serve_smtp() as server:` (or the
`smtp_server` fixture in conftest.py) starts it on 127.0.0.1, port 0. Faults are injected on the
server side by setting `server.faults`, never by mocking the client (STYLE.md §11).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from mailer.config_transport import SmtpSettings

HOSTNAME = "mailer-test"  # given explicitly, so aiosmtpd does no FQDN lookup
USERNAME = "mailer"
PASSWORD = "s3cret-Pa55word"  # tests assert this string never shows up in a reply
BUSY_REPLY = "451 4.7.1 try later"
STALL_S = 5.0  # how long a stalled server waits: longer than any client timeout a test sets


@dataclass
class Faults:
    """What the server does wrong, per test. Counters count down to 0, then the server behaves."""

    busy: int = 0  # answer the next N messages with BUSY_REPLY at the end of DATA
    refuse: set[str] = field(default_factory=set)  # answer 550 at RCPT TO for these addresses
    drop_at_data: int = 0  # close the connection instead of answering the next N messages
    stall_at_data: int = 0  # sleep STALL_S before answering the next N messages
    # What to do with the next messages, one entry each, before the counters above apply:
    # "ok" (accept as usual), an SMTP reply ("421 …", "452 …"), "drop" (hang up without a
    # reply, message not kept) or "drop-after" (keep it, then hang up before the 250: the
    # duplicate RFC 1047 says no client can avoid).
    script: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Received:
    """One message the server accepted with 250."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    message_id: str | None
    tls: bool  # whether it came over TLS (STARTTLS or implicit)
    login: str | None  # the AUTH user, None without AUTH
    mail_options: tuple[str, ...] = ()  # as MAIL FROM gave them: SIZE=…, SMTPUTF8


class _Handler:
    """Records accepted messages and applies `faults`; aiosmtpd calls the handle_* hooks."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtpd: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.server.faults.refuse:
            return f"550 5.1.1 <{address}>: recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtpd: SMTP, session: Session, envelope: Envelope) -> str:
        faults = self.server.faults
        step = faults.script.pop(0) if faults.script else "ok"
        if step != "ok":
            if step == "drop-after":
                self._keep(session, envelope)
            if step.startswith("drop"):
                assert smtpd.transport is not None
                smtpd.transport.close()
                return "451 4.3.0 connection dropped"  # never seen: the transport is closed
            return step
        if faults.drop_at_data:
            faults.drop_at_data -= 1
            assert smtpd.transport is not None
            smtpd.transport.close()  # the client never hears whether its message arrived
            return "451 4.3.0 connection dropped"  # written into the closed transport: never seen
        if faults.stall_at_data:
            faults.stall_at_data -= 1
            await asyncio.sleep(STALL_S)  # cancelled by aiosmtpd once the client hangs up
        if faults.busy:
            faults.busy -= 1
            return BUSY_REPLY
        self._keep(session, envelope)
        return "250 2.0.0 OK: queued"

    def _keep(self, session: Session, envelope: Envelope) -> None:
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.server.messages.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=content,
                message_id=str(parsed["Message-ID"]) if "Message-ID" in parsed else None,
                tls=self.server.implicit_tls or session.ssl is not None,
                login=login,
                mail_options=tuple(envelope.mail_options),
            )
        )


class _CountingSMTP(SMTP):
    """aiosmtpd's protocol, noting each AUTH command's mechanism: a relay logs every refused
    one as a failed login, and enough of those lock the account."""

    def __init__(self, server: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server = server

    async def smtp_AUTH(self, arg: str) -> None:
        self._server.auth_commands.append(arg.split(" ", 1)[0].upper())
        await super().smtp_AUTH(arg)


def _authenticate(
    smtpd: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """Accept exactly USERNAME / PASSWORD, for PLAIN and LOGIN alike."""
    is_valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    if is_valid:
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)  # aiosmtpd then answers 535


class SmtpServer:
    """The running server: its port, CA, accepted `messages`, `connections` opened, `faults`."""

    def __init__(self, *, implicit_tls: bool) -> None:
        self.ca = trustme.CA()
        self.implicit_tls = implicit_tls
        self.port = 0
        self.messages: list[Received] = []
        self.connections = 0
        self.auth_commands: list[str] = []  # the mechanism of every AUTH command, in order
        self.faults = Faults()
        self._protocols: list[SMTP] = []

    def server_context(self) -> ssl.SSLContext:
        """The server's side: a certificate for 127.0.0.1 and localhost, issued by `ca`."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost", HOSTNAME).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts `ca` and still verifies the certificate and host name."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context

    def _protocol(self, **options: Any) -> SMTP:
        """One aiosmtpd protocol per accepted connection, counted to prove sessions are reused."""
        self.connections += 1
        protocol = _CountingSMTP(
            self, _Handler(self), hostname=HOSTNAME, authenticator=_authenticate, **options
        )
        if self.implicit_tls:
            # The socket is TLS from the first byte, which aiosmtpd does not know: it would
            # withhold AUTH waiting for a STARTTLS that cannot come.
            protocol._auth_require_tls = False
        self._protocols.append(protocol)
        return protocol

    def hang_up(self) -> None:
        """Drop every open connection without a word, as a server does with idle clients."""
        for protocol in self._protocols:
            if isinstance(protocol.transport, asyncio.Transport):
                protocol.transport.abort()

    async def _stop(self) -> None:
        """Abort every connection and wait for aiosmtpd's session tasks to end (no task leaks)."""
        self.hang_up()
        tasks = [p._handler_coroutine for p in self._protocols if p._handler_coroutine]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)


@asynccontextmanager
async def serve_smtp(
    *,
    starttls: bool = True,
    implicit_tls: bool = False,
    require_starttls: bool = True,
    auth_required: bool = True,
    auth_require_tls: bool = True,
    smtputf8: bool = False,
    auth_exclude: tuple[str, ...] = (),
) -> AsyncIterator[SmtpServer]:
    """Run a server on 127.0.0.1:0 in the running loop until the block ends.

    Defaults: STARTTLS offered and required, AUTH PLAIN/LOGIN required and offered only over TLS.
    `starttls=False` advertises no STARTTLS; `implicit_tls=True` speaks TLS from the first byte;
    `smtputf8=True` offers SMTPUTF8 (non-ASCII addresses), as Postfix does by default;
    `auth_exclude=("PLAIN",)` leaves that AUTH mechanism out of what the server offers.
    """
    server = SmtpServer(implicit_tls=implicit_tls)
    tls_context = server.server_context()
    options = {
        "tls_context": tls_context if starttls and not implicit_tls else None,
        "require_starttls": require_starttls,
        "auth_required": auth_required,
        "auth_require_tls": auth_require_tls,
        "enable_SMTPUTF8": smtputf8,
        "auth_exclude_mechanism": auth_exclude,
    }
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: server._protocol(**options),
        host="127.0.0.1",
        port=0,
        ssl=tls_context if implicit_tls else None,
    )
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await server._stop()
        await listener.wait_closed()


def smtp_settings(server: SmtpServer, **overrides: Any) -> SmtpSettings:
    """Transport settings pointing at `server` with the right credentials; override any key."""
    values: dict[str, Any] = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": server.port,
        "security": "tls" if server.implicit_tls else "starttls",
        "username": USERNAME,
        "password_env": "MAILER_SMTP_PASSWORD",
        "password": SecretStr(PASSWORD),
        "timeout": "5s",
    }
    values.update(overrides)
    if isinstance(values["password"], str):
        values["password"] = SecretStr(values["password"])
    return SmtpSettings(**values)
