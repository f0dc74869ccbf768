"""What a failed SMTP session or reply means, in words: for the person who must act (a
login, a certificate, STARTTLS) or a passing fault, and the verdict on the message."""

from __future__ import annotations

import ssl

import aiosmtplib

from mailer import config_transport
from mailer.delivery import Outcome, Verdict

NO_STARTTLS = (
    "the server does not offer STARTTLS; refusing to send in plain text "
    '(set transport.security = "none" only for a trusted local relay)'
)


class Refused(Exception):
    """The server cannot be used as configured (no STARTTLS, no AUTH): a person must act."""


def server_of(settings: config_transport.SmtpSettings) -> str:
    return f"{settings.host}:{settings.port}"


def by_code(code: int, message: str) -> Outcome:
    """The server's verdict on this message: 5xx is final, anything else may pass later."""
    verdict = Verdict.FAIL if 500 <= code < 600 else Verdict.RETRY
    return Outcome(verdict, f"{code} {message}", code)


def configuration_problem(
    exc: BaseException, settings: config_transport.SmtpSettings
) -> str | None:
    """What a person must fix (login, certificate, STARTTLS), or None for a passing fault.

    These still RETRY, never FAIL: once the setting is fixed, the waiting mail must flow.
    """
    tls_error = _tls_error(exc)
    if isinstance(exc, Refused):
        return str(exc)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        where = f"${settings.password_env}" if settings.password_env else "transport.password_env"
        return (
            f"authentication failed ({exc.code} {exc.message}): "
            f"check transport.username and the password in {where}"
        )
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        return (
            f"the TLS certificate of {server_of(settings)} was refused "
            f"({tls_error.verify_message}): fix the server's certificate or trust its CA; "
            "set transport.validate_certs = false only for a trusted local relay"
        )
    if tls_error is not None:
        return f"TLS with {server_of(settings)} failed: {tls_error}"
    return None


def connection_problem(exc: BaseException, settings: config_transport.SmtpSettings) -> str:
    """A passing fault (timeout, drop, refused connection, 4xx greeting) in plain words."""
    server = server_of(settings)
    if isinstance(exc, TimeoutError):
        return f"no answer from {server} within {settings.timeout.total_seconds():g} s ({exc})"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return f"{server} closed the connection ({exc})"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{server} refused the session: {exc.code} {exc.message}"
    if isinstance(exc, OSError | aiosmtplib.SMTPConnectError):
        return f"cannot connect to {server}: {exc}"
    return f"SMTP session with {server} failed: {exc}"


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind `exc`: aiosmtplib wraps it (implicit TLS) or not (STARTTLS)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
