"""The SMTP password (issues #7.5, #11.12): a password written in the configuration is refused,
and the one from $password_env never shows in logs, settings, status output or the database,
whatever the SMTP server answers (even when it echoes the password back, plain or in the base64
the AUTH command carried it in), nor in the environment of the processes the service starts."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
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
from tests.project import MAILDIR, REPO, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import HOSTNAME, SmtpServer
from tests.test_engine import INVITATION_DUE

pytestmark = pytest.mark.timeout(30)

# What $MAILER_SMTP_PASSWORD holds in these tests; the test server wants another one.
SECRET = "Zq9-s3cret-never-shown"
USERNAME = "mailer"  # as tests/project.py's smtp_transport logs in
# Where the server that echoes the password puts it, so that a test can see it arrived.
ECHO = "535 5.7.8 {} is not the password"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# What a careless relay may quote back: the password as AUTH carried it. AUTH PLAIN sends
# base64 of "authzid NUL user NUL password" (authzid mostly empty), AUTH LOGIN base64 of each.
ENCODED = {
    "plain": b64(f"\0{USERNAME}\0{SECRET}"),
    "plain with authzid": b64(f"{USERNAME}\0{USERNAME}\0{SECRET}"),
    "plain without authzid": b64(f"{USERNAME}\0{SECRET}"),
    "login": b64(SECRET),
}
# Every form the password must never be seen in.
FORMS = [SECRET, *ENCODED.values()]


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


def _echoing(form: str) -> Any:
    """An authenticator that refuses every login, quoting the password in the reply as a
    careless server might: as given (`form` "password"), or in one of the ENCODED forms, made
    from what the client really sent."""

    def echo_password(
        server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        quoted = {
            "password": password,
            "plain": b64(f"\0{login}\0{password}"),  # the very argument of AUTH PLAIN
            "plain with authzid": b64(f"{login}\0{login}\0{password}"),
            "plain without authzid": b64(f"{login}\0{password}"),
            "login": b64(password),  # the very line AUTH LOGIN sent the password in
        }[form]
        return AuthResult(success=False, handled=False, message=ECHO.format(quoted))

    return echo_password


@asynccontextmanager
async def echoing_server(form: str = "password") -> AsyncIterator[int]:
    """A plain-text SMTP server on 127.0.0.1 whose 535 reply quotes the password; its port."""
    protocols: list[SMTP] = []
    # Only the mechanism whose argument is echoed is offered, so the client uses it.
    excluded = ["PLAIN"] if form == "login" else ["LOGIN"]

    def protocol() -> SMTP:
        protocols.append(
            SMTP(
                object(),
                hostname=HOSTNAME,
                authenticator=_echoing(form),
                auth_require_tls=False,
                auth_exclude_mechanism=excluded,
            )
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
        assert (await engine.step()).handled == 1
    finally:
        await transport.close()
        await store.close()


def database_bytes(root: Path) -> bytes:
    """The database as it lies on disk, write-ahead log included."""
    files = sorted((root / "var").glob("mailer.sqlite3*"))
    assert files
    return b"".join(path.read_bytes() for path in files)


@pytest.mark.parametrize(
    "failure",
    [
        "wrong password",
        "untrusted certificate",
        "echoed password",
        *(f"echoed {f}" for f in ENCODED),
    ],
)
async def test_no_failing_login_shows_the_password_anywhere(
    tmp_path: Path,
    smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
):
    caplog.set_level(logging.DEBUG)
    if failure.startswith("echoed "):
        async with echoing_server(failure.removeprefix("echoed ")) as port:
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
    on_disk = database_bytes(tmp_path)
    assert not [form for form in FORMS if form.encode() in on_disk]
    # The test server's own log (aiosmtpd, "mail.log") is not the service's.
    logged = [r for r in caplog.records if r.name != "mail.log"]
    assert any(expected in r.getMessage() for r in logged)
    assert not [form for r in logged for form in FORMS if form in caplog.handler.format(r)]
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)  # the earlier load took it out
    code, status = await asyncio.to_thread(
        mailer, "status", "-c", str(tmp_path / "config.toml"), "seminarium", "invitation", "--json"
    )
    assert code == 0 and expected.replace('"', '\\"') in status
    assert not [form for form in FORMS if form in status]


# -- the environment of the processes the service starts ---------------------------------


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def python_children(pid: int) -> dict[int, tuple[bytes, bytes]]:
    """Each process under `pid` that multiprocessing started (the readers' fork server and
    the readers it forks, the resource tracker): its command line and environment. Only
    once it runs its own program: between fork and exec, a child still shows the parent's
    environment as the parent's program found it."""
    seen = {}
    for child in [*children_of(pid), *(g for c in children_of(pid) for g in children_of(c))]:
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes()
            if b"multiprocessing" in command:
                seen[child] = (command, (Path("/proc") / str(child) / "environ").read_bytes())
        except OSError:
            continue
    return seen


def test_processes_started_by_the_service_do_not_inherit_the_password(tmp_path: Path):
    for i in range(50):  # enough event files for the service to read them in worker processes
        write_event(tmp_path, f"event-{i:02d}", timed_event("2098-06-01T09:00:00", people=1))
    make_project(tmp_path, transport=smtp_transport(9, security="none"))  # nothing is due
    env = {**os.environ, "MAILER_SMTP_PASSWORD": SECRET, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mailer", "run", "-c", str(tmp_path / "config.toml")]
    service = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    children: dict[int, tuple[bytes, bytes]] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and service.poll() is None:
            children |= python_children(service.pid)
            commands = [command for command, _ in children.values()]
            servers = [c for c in commands if b"forkserver" in c]
            if any(b"resource_tracker" in c for c in commands) and len(servers) > 1:
                break  # the fork server and a reader it forked
            time.sleep(0.005)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=20)
    commands = [command for command, _ in children.values()]
    assert len([c for c in commands if b"forkserver" in c]) > 1, commands  # server, reader
    assert any(b"resource_tracker" in c for c in commands), commands
    for command, environ in children.values():
        assert SECRET.encode() not in environ, command
        assert b"MAILER_SMTP_PASSWORD=" not in environ, command
