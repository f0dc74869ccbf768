"""`[web]` (SPEC §12): the address rule, the login, the password from the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer.config import load_settings
from mailer.errors import Problems
from tests.project import make_project

SENDER = '[sender]\nfrom = "info@example.org"\n'
SECRET = "correct horse battery staple"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(SENDER + text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(Problems) as caught:
        load_settings(path)
    return str(caught.value).splitlines()


def test_the_page_is_on_loopback_port_8025_by_default(tmp_path: Path):
    web = load_settings(write(tmp_path, "")).web
    assert (web.listen, web.host, web.port, web.username, web.password) == (
        "127.0.0.1:8025",
        "127.0.0.1",
        8025,
        None,
        None,
    )


@pytest.mark.parametrize("listen", ["", "[::1]:9000", "localhost:9000", "127.0.0.2:80"])
def test_off_or_loopback_needs_no_login(tmp_path: Path, listen: str):
    assert load_settings(write(tmp_path, f'[web]\nlisten = "{listen}"\n')).web.listen == listen


@pytest.mark.parametrize("listen", ["0.0.0.0:8025", "[::]:8025", "192.0.2.7:80", "mail.lan:80"])
def test_off_loopback_without_a_login_is_refused(tmp_path: Path, listen: str):
    (line,) = problems_of(write(tmp_path, f'[web]\nlisten = "{listen}"\n'))
    assert line.endswith(
        f"web.listen: a page on {listen} shows recipients' addresses: set web.username and "
        f"web.password_env, or listen on 127.0.0.1"
    )


@pytest.mark.parametrize("listen", ["8025", "127.0.0.1", "127.0.0.1:x", ":8025", "h:70000"])
def test_a_listen_that_is_not_host_and_port_is_said(tmp_path: Path, listen: str):
    (line,) = problems_of(write(tmp_path, f'[web]\nlisten = "{listen}"\n'))
    assert 'web.listen: expected "host:port"' in line


def test_the_password_comes_from_the_environment_and_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MAILER_WEB_PASSWORD", SECRET)
    path = write(
        tmp_path,
        '[web]\nlisten = "0.0.0.0:8025"\nusername = "arr"\npassword_env = "MAILER_WEB_PASSWORD"\n',
    )
    web = load_settings(path).web
    assert web.password is not None and web.password.get_secret_value() == SECRET
    assert "MAILER_WEB_PASSWORD" not in os.environ
    assert SECRET not in repr(web)


def test_an_unset_password_variable_is_said_only_where_it_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("MAILER_WEB_PASSWORD", raising=False)
    path = write(tmp_path, '[web]\nusername = "arr"\npassword_env = "MAILER_WEB_PASSWORD"\n')
    (line,) = problems_of(path)
    assert line.endswith("web.password_env: environment variable MAILER_WEB_PASSWORD is not set")
    assert load_settings(path, needs_password=False).web.password is None


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ('username = "arr"\n', "set both web.username and web.password_env, or neither"),
        ('password = "x"\n', "web.password: a password never sits in a file"),
        ("listen = 8025\n", "web.listen: expected a string, got 8025"),
        ("port = 8025\n", "web.port: unknown key (known: listen, username, password_env)"),
    ],
)
def test_mistakes_are_said_with_the_key(tmp_path: Path, text: str, end: str):
    lines = problems_of(write(tmp_path, "[web]\n" + text))
    assert any(end in line for line in lines), lines


def test_run_off_loopback_without_a_login_exits_2_before_it_binds(tmp_path: Path):
    config = make_project(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(config.read_text().replace('listen = ""', f'listen = "0.0.0.0:{port}"'))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mailer", "-c", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert f"web.listen: a page on 0.0.0.0:{port} shows recipients' addresses" in done.stderr
    assert not (tmp_path / "var" / "mailer.sqlite3").exists()  # nothing opened, nothing bound
    assert time.monotonic() - started < 30
