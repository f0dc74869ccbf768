"""Debian's chromium for the browser tests, driven by Playwright with `executable_path`
(Playwright's own browser download cannot run here, nor is one needed).

Without chromium the tests skip, except in CI (CI=true), where they fail: `.ci/run`
installs it, so a skip there would hide the browser half of the suite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless as root in a container, on a machine without a network: no sandbox (it needs
# user namespaces), no GPU, and none of chromium's own calls home (refused here, many at a
# time, and each start would wait on Google's host names).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where the browser test writes its screenshots, when asked (docs/images for the guides):
# a plain test run leaves the work tree as it was.
SCREENSHOTS_VARIABLE = "MAILER_SCREENSHOTS"
REPO = Path(__file__).resolve().parents[1]


def chromium_or_skip() -> str:
    """The path of chromium; without it a skip, or in CI a failure."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    why = f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def shipped_examples_served(root: Path) -> Iterator[str]:
    """`mailer run` as `make run` starts it (config.example.toml, the shipped schedules and
    templates), copied under `root` and on a free port; its base URL once /healthz answers."""
    shutil.copytree(REPO / "schedules", root / "schedules")
    shutil.copytree(REPO / "templates", root / "templates")
    port = free_port()
    config = root / "config.toml"
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    config.write_text(f'{text}\n[web]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
    log = root / "service.log"  # a file, not a pipe nobody reads, which could fill and block
    with log.open("wb") as log_file:
        service = subprocess.Popen(
            [sys.executable, "-m", "mailer", "-c", str(config), "run"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base + "/healthz", service, log)
        yield base
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _wait_for(
    url: str, service: subprocess.Popen[bytes], log: Path, timeout_s: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert service.poll() is None, log.read_text(encoding="utf-8", errors="replace")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")
