"""Hands messages to an SMTP server over a small pool of kept-open aiosmtplib sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, replace

import aiosmtplib
from aiolimiter import AsyncLimiter

from mailer import config_transport
from mailer.delivery import Outcome, Verdict
from mailer.transports.base import Pace
from mailer.transports.masking import scrub
from mailer.transports.smtp_faults import (
    NO_STARTTLS,
    Refused,
    by_code,
    configuration_problem,
    connection_problem,
    server_of,
)
from mailer.transports.smtp_transaction import SESSION_ERRORS, transact

log = logging.getLogger("mailer.smtp")

# Servers drop idle clients after 1-5 minutes, often without a word; a session idle this long
# gets a NOOP before it carries a message, so a dead one is replaced instead of failing a send.
IDLE_CHECK_S = 30.0
# QUIT at shutdown is a courtesy: a silent server must not hold the service up longer than this.
QUIT_TIMEOUT_S = 5.0
# AUTH mechanisms in the order tried, as aiosmtplib names them (`auth_plain`, ...): one only.
_AUTH_OVER_TLS = ("plain", "login", "cram-md5")
_AUTH_PLAIN_TEXT = ("cram-md5", "plain", "login")


@dataclass
class _Slot:
    """One place in the pool: a connected client, or None until the next send connects it."""

    client: aiosmtplib.SMTP | None = None
    last_used: float = 0.0  # loop.time() when its last transaction ended


class SmtpTransport:
    """Sends each message to one recipient over at most `connections` kept-open sessions.

    - Pool: an aiosmtplib client must not be shared by concurrent tasks (aiosmtplib #15), and
      a TLS + AUTH handshake costs several round trips, so `connections` slots wait in a queue;
      a send takes one, connects it if needed, and puts it back with the session still open.
    - Every (re)connect builds a fresh client: a client reconnected after the server hung up
      can hang in connect() (#243) or keep stale state (#38).
    - NOOP before reusing a session idle for `idle_check_s`: a silently dropped session is
      replaced before MAIL FROM, so the drop costs no delivery attempt. A failure after DATA
      is never retried here: the message may have arrived (RFC 1047); the engine decides.
    - One limiter shared by all sessions, with capacity 1: messages leave at most one per
      60/max_per_minute seconds, so no burst ever exceeds the per-minute figure. `pace`
      replaces it with one every node shares (mailer.pacing).
    """

    def __init__(
        self,
        settings: config_transport.SmtpSettings,
        *,
        connections: int,
        max_per_minute: int,
        tls_context: ssl.SSLContext | None = None,
        idle_check_s: float = IDLE_CHECK_S,
        pace: Pace | None = None,
    ) -> None:
        self.settings = settings
        self.timeout_s = settings.timeout.total_seconds()
        self.idle_check_s = idle_check_s
        # A given context (tests pass one trusting their CA) or one trusting transport.ca_file
        # still verifies; with validate_certs = false aiosmtplib builds one that does not.
        if tls_context is None and settings.ca_file is not None:
            tls_context = ssl.create_default_context(cafile=settings.ca_file)
        self._tls_context = tls_context if settings.validate_certs else None
        self._limiter: Pace | None = pace
        if pace is None and max_per_minute > 0:
            self._limiter = AsyncLimiter(1, 60 / max_per_minute)
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(_Slot())
        self._local_hostname: str | None = None
        self._closed = False

    async def send(self, message: bytes, *, sender: str, recipient: str) -> Outcome:
        if self._limiter is not None:
            await self._limiter.acquire()
        slot = await self._idle.get()
        is_done = False
        try:
            if self._closed:
                outcome = Outcome(Verdict.RETRY, "the SMTP transport is shut down")
            else:
                outcome = await self._send_on(slot, message, sender=sender, recipient=recipient)
            is_done = True
            return replace(outcome, reply=self._scrub(outcome.reply))
        finally:
            if not is_done or self._closed:  # cancelled mid-transaction: the session is unusable
                _drop(slot)
            slot.last_used = asyncio.get_running_loop().time()
            self._idle.put_nowait(slot)

    async def close(self) -> None:
        """Say QUIT on idle sessions; sessions still in use close when their send ends."""
        self._closed = True
        slots = [self._idle.get_nowait() for _ in range(self._idle.qsize())]
        await asyncio.gather(*(self._quit(slot) for slot in slots))
        for slot in slots:
            self._idle.put_nowait(slot)
        await asyncio.sleep(0)  # the aborted sockets close on this turn (see _quit)

    async def _send_on(
        self, slot: _Slot, message: bytes, *, sender: str, recipient: str
    ) -> Outcome:
        try:
            client = await self._ready(slot)
        except (Refused, *SESSION_ERRORS) as exc:
            return self._session_failure(exc)
        options = []
        if not (sender + recipient).isascii():
            if not client.supports_extension("smtputf8"):
                reply = f"the server has no SMTPUTF8 for the address {recipient!r} or {sender!r}"
                return Outcome(Verdict.FAIL, reply)
            options.append("SMTPUTF8")
        try:
            reply = await transact(
                client, message, sender=sender, recipient=recipient, options=options
            )
        except aiosmtplib.SMTPResponseException as exc:  # refused, and RSET: the session stays
            if not client.is_connected:  # 421: the server is closing the session
                _drop(slot)
            return by_code(exc.code, exc.message)
        except SESSION_ERRORS as exc:
            _drop(slot)
            return self._session_failure(exc)
        except ValueError as exc:  # an address that cannot go on a command line; nothing sent
            return Outcome(Verdict.FAIL, f"cannot send to {recipient!r} from {sender!r}: {exc}")
        return Outcome(Verdict.SENT, f"250 {reply}", 250)

    async def _ready(self, slot: _Slot) -> aiosmtplib.SMTP:
        """The slot's session, checked with NOOP when idle long, else a fresh connection."""
        client = slot.client
        if client is not None and client.is_connected:
            idle_s = asyncio.get_running_loop().time() - slot.last_used
            if idle_s < self.idle_check_s:
                return client
            try:
                await client.noop()
                return client
            except SESSION_ERRORS as exc:  # not a delivery failure: nothing was sent yet
                gone = self._scrub(str(exc))
                log.debug(
                    "session to %s idle %.0f s is gone (%s)", server_of(self.settings), idle_s, gone
                )
        _drop(slot)
        slot.client = await self._connect()
        return slot.client

    async def _connect(self) -> aiosmtplib.SMTP:
        """A new session: connect, STARTTLS when configured (or refuse), EHLO, then AUTH.

        EHLO on every session, in every mode: without it the client knows none of the
        server's extensions, so MAIL FROM goes without SIZE and a non-ASCII address fails
        for want of an SMTPUTF8 the server offers. After STARTTLS it is asked again: what was
        said in plain text no longer counts (RFC 3207).
        """
        settings = self.settings
        if self._local_hostname is None:  # aiosmtplib would look it up again for every client
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        log.debug("connecting to %s (security %s)", server_of(settings), settings.security)
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            local_hostname=self._local_hostname,
            timeout=self.timeout_s,
            use_tls=settings.security == "tls",
            start_tls=False,  # upgraded below, so that a missing STARTTLS is refused, not skipped
            validate_certs=settings.validate_certs,
            tls_context=self._tls_context,
        )
        try:
            await client.connect()
            if settings.security == "starttls":
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise Refused(NO_STARTTLS)
                await client.starttls()
            await _greet(client)
            if settings.username is not None:
                await self._login(client, settings.username)
        except BaseException:
            client.close()
            raise
        return client

    async def _login(self, client: aiosmtplib.SMTP, username: str) -> None:
        """AUTH with one mechanism, never a second after a refusal: aiosmtplib's `login` goes
        on to the next mechanism, and a relay counts each refused one as a failed login,
        which locks accounts. Over TLS, PLAIN before LOGIN (one round trip, and the server
        may keep only a hash of the password); CRAM-MD5 first only on a plain-text session,
        where it keeps the password off the wire."""
        offered = set(client.server_auth_methods)
        preferred = _AUTH_PLAIN_TEXT if self.settings.security == "none" else _AUTH_OVER_TLS
        mechanism = next((name for name in preferred if name in offered), None)
        if mechanism is None:
            raise Refused(
                "the server does not offer AUTH on this connection: check transport.security, "
                "or leave out transport.username if the server needs no login"
            )
        password = self.settings.password
        secret = password.get_secret_value() if password else ""
        log.debug("logging in to %s with AUTH %s", server_of(self.settings), mechanism.upper())
        login = {"plain": client.auth_plain, "login": client.auth_login}
        await login.get(mechanism, client.auth_crammd5)(username, secret)

    def _session_failure(self, exc: BaseException) -> Outcome:
        """A failure of the session, not of the message: RETRY, said plainly and logged."""
        problem = configuration_problem(exc, self.settings)
        level = logging.ERROR if problem else logging.WARNING
        reply = self._scrub(problem or connection_problem(exc, self.settings))
        log.log(level, "%s", reply)
        code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
        return Outcome(Verdict.RETRY, reply, code, needs_attention=problem is not None)

    def _scrub(self, text: str) -> str:
        """Whatever a server echoes back, the password never reaches a reply or a log."""
        password = self.settings.password.get_secret_value() if self.settings.password else ""
        return scrub(text, password) if password else text

    async def _quit(self, slot: _Slot) -> None:
        connection = slot.client.transport if slot.client is not None else None
        if slot.client is not None and slot.client.is_connected:
            with contextlib.suppress(*SESSION_ERRORS):  # closing anyway
                await slot.client.quit(timeout=min(self.timeout_s, QUIT_TIMEOUT_S))
        _drop(slot)
        # After QUIT nothing is left to say: a TLS session's polite close waits for the
        # server's close_notify, which a command's asyncio.run() ending next does not wait
        # for (its socket was left to the garbage collector). Aborted, the socket closes on
        # the next turn of the loop.
        if isinstance(connection, asyncio.Transport):
            connection.abort()


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO from an old relay that knows no EHLO (it then has no extensions)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


def _drop(slot: _Slot) -> None:
    """Close the slot's session without a word; the next send opens a fresh one."""
    if slot.client is not None:
        slot.client.close()
        slot.client = None
