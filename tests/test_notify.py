"""systemd's notify protocol (SPEC §12): a real Unix datagram socket, a real `mailer run`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mailer.notify import Notifier
from tests.project import make_project, write_event
from tests.test_web import free_port


def receive(sock: socket.socket, want: str, *, timeout_s: float = 20.0) -> list[str]:
    """Datagrams until `want` arrives (bounded), all of them in order."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while want not in got:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {want} within {timeout_s} s; got {got}") from None
    return got


def health(url: str, *, timeout_s: float = 10.0) -> int:
    """The status /healthz answers once the page is up (it starts just after READY=1)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_run_says_ready_keeps_the_watchdog_fed_and_says_stopping(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    port = free_port()
    config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"'))
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        service = subprocess.Popen(
            [sys.executable, "-m", "mailer", "-c", str(config), "run"],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first = receive(sock, "READY=1")
            assert first == ["READY=1"]  # nothing before the plan is loaded
            pings = receive(sock, "WATCHDOG=1", timeout_s=5)
            assert health(f"http://127.0.0.1:{port}/healthz") == 200
            service.send_signal(signal.SIGTERM)
            rest = receive(sock, "STOPPING=1")
            assert set(pings + rest) <= {"WATCHDOG=1", "STOPPING=1"}
        finally:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
            _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr


def test_an_abstract_socket_name_starts_with_at(tmp_path: Path):
    name = f"mailer-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        Notifier("@" + name, watchdog_s=None).send("READY=1")
        sock.settimeout(5)
        assert sock.recv(100) == b"READY=1"


def test_without_a_socket_nothing_is_sent_and_nothing_fails(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = Notifier.from_environment()
    assert (notifier.address, notifier.watchdog_s) == (None, 30.0)
    notifier.send("READY=1")


def test_a_watchdog_meant_for_another_process_is_not_ours(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_environment().watchdog_s is None


def test_a_socket_that_is_gone_is_logged_not_raised(tmp_path: Path, caplog):
    Notifier(str(tmp_path / "gone.sock"), watchdog_s=None).send("READY=1")
    assert "gone.sock" in caplog.text
