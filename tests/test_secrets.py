"""The SMTP password (issue #7.5): a password written in the configuration is refused, and the
one from $password_env never shows in logs, settings, status output or the database, whatever
the SMTP server answers (even when it echoes the password back)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import ManualClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.errors import Problems
from mailer.store import Store
from mailer.transports.smtp import SmtpTransport
from tests.project import MAILDIR, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import HOSTNAME, SmtpServer
from tests.test_engine import INVITATION_DUE

pytestmark = pytest.mark.timeout(30)

# What $MAILER_SMTP_PASSWORD holds in these tests; the test server wants another one.
SECRET = "Zq9-s3cret-never-shown"
# Where the server that echoes the password puts it, so that a test can see it arrived.
ECHO = "535 5.7.8 {} is not the password"


@pytest.fixture(autouse=True)
def smtp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)


def mailer(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("transport", [smtp_transport(2525), MAILDIR])
def test_a_password_written_in_the_config_is_refused_without_showing_it(
    tmp_path: Path, transport: str
):
    config = make_project(tmp_path, transport=f'{transport}password = "{SECRET}"\n')
    code, output = mailer("check", "-c", str(config))
    assert code == 2
    assert output == (
        f"{config}: transport.password: a password never sits in a file; put it in an "
        "environment variable and name that variable in transport.password_env\n"
    )
    with pytest.raises(Problems) as raised:
        load_settings(config)
    shown = [str(raised.value), repr(raised.value), *(repr(vars(p)) for p in raised.value.problems)]
    assert all(SECRET not in text for text in shown)


def test_settings_never_show_the_password(tmp_path: Path):
    settings = load_settings(make_project(tmp_path, transport=smtp_transport(2525)))
    password = settings.transport.password  # type: ignore[union-attr]
    assert password is not None and password.get_secret_value() == SECRET
    shown = [
        repr(settings),
        str(settings),
        repr(settings.transport),
        settings.model_dump_json(),
        str(settings.model_dump()),
    ]
    assert all(SECRET not in text for text in shown)


# -- a run of the engine against servers that refuse the login ---------------------------


def _echo_password(
    server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    """Refuse every login, quoting the password in the reply as a careless server might."""
    assert isinstance(auth_data, LoginPassword)
    echo = ECHO.format(auth_data.password.decode())
    return AuthResult(success=False, handled=False, message=echo)


@asynccontextmanager
async def echoing_server() -> AsyncIterator[int]:
    """A plain-text SMTP server on 127.0.0.1 whose 535 reply holds the password; its port."""
    protocols: list[SMTP] = []

    def protocol() -> SMTP:
        protocols.append(
            SMTP(object(), hostname=HOSTNAME, authenticator=_echo_password, auth_require_tls=False)
        )
        return protocols[-1]

    listener = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        for p in protocols:
            if isinstance(p.transport, asyncio.Transport):
                p.transport.abort()
        tasks = [p._handler_coroutine for p in protocols if p._handler_coroutine]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
        await listener.wait_closed()


async def attempt_once(root: Path, transport_config: str, **tls: Any) -> None:
    """One delivery attempt by the engine (real SQLite, real SMTP) at the mail's due time."""
    due = INVITATION_DUE.isoformat()
    write_event(root, "seminarium", timed_event(due, people=1))
    make_project(root, transport=transport_config)
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    transport = SmtpTransport(
        settings.transport,  # type: ignore[arg-type]
        connections=1,
        max_per_minute=0,
        **tls,
    )
    engine = Engine(settings, store=store, transport=transport, clock=ManualClock(INVITATION_DUE))
    try:
        await engine.load_all()
        assert await engine.step() == 1
    finally:
        await transport.close()
        await store.close()


def database_bytes(root: Path) -> bytes:
    """The database as it lies on disk, write-ahead log included."""
    files = sorted((root / "var").glob("mailer.sqlite3*"))
    assert files
    return b"".join(path.read_bytes() for path in files)


@pytest.mark.parametrize("failure", ["wrong password", "untrusted certificate", "echoed password"])
async def test_no_failing_login_shows_the_password_anywhere(
    tmp_path: Path, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture, failure: str
):
    caplog.set_level(logging.DEBUG)
    if failure == "echoed password":
        async with echoing_server() as port:
            await attempt_once(tmp_path, smtp_transport(port, security="none"))
        expected = "authentication failed (" + ECHO.format("********")
    elif failure == "wrong password":
        tls_context = smtp_server.client_context()
        await attempt_once(tmp_path, smtp_transport(smtp_server.port), tls_context=tls_context)
        expected = "authentication failed (535 "
    else:  # the CA is not trusted, as in production with the test server's certificate
        await attempt_once(tmp_path, smtp_transport(smtp_server.port))
        expected = "certificate of 127.0.0.1"

    with sqlite3.connect(tmp_path / "var" / "mailer.sqlite3") as db:
        ((state, reply),) = db.execute("SELECT state, last_reply FROM deliveries").fetchall()
        ((stored,),) = db.execute("SELECT reply FROM attempts").fetchall()
    assert state == "retrying" and expected in reply and stored == reply
    assert SECRET.encode() not in database_bytes(tmp_path)
    # The test server's own log (aiosmtpd, "mail.log") is not the service's.
    logged = [r for r in caplog.records if r.name != "mail.log"]
    assert any(expected in r.getMessage() for r in logged)
    assert all(SECRET not in caplog.handler.format(r) for r in logged)
    code, status = await asyncio.to_thread(
        mailer, "status", "-c", str(tmp_path / "config.toml"), "seminarium", "invitation", "--json"
    )
    assert code == 0 and expected.replace('"', '\\"') in status and SECRET not in status
