"""A throwaway mailer project in a temp folder: config, schedules, the real templates."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"

CONFIG = """
[paths]
schedules = "schedules"
templates = "{templates}"
database = "var/mailer.sqlite3"

[sender]
from = "samhallskontraktet@example.org"
from_name = "Samhällskontraktet"

{transport}

[sending]
connections = {connections}
max_per_minute = 0
backoff_first = "{backoff_first}"
backoff_max = "1h"
shutdown_grace = "3s"

[web]
# Off: tests run side by side, and a page of its own is for tests/test_web.py.
listen = ""
"""

MAILDIR = """
[transport]
kind = "maildir"
path = "var/maildir"
"""

EVENT = """
title = "Förlabb: Skolnärvaro"
starts = {starts}
ends = {ends}
location = "Mälardalens universitet, Västerås"
organiser = {{ name = "Samhällskontraktet", email = "samhallskontraktet@example.org" }}

[recipients]
groups = ["registered", "attended"]

[[recipients.people]]
email = "anna@example.org"
name = "Anna Andersson"
groups = ["registered"]

[[recipients.people]]
email = "bjorn@example.org"
name = "Björn Östlund"
language = "en"
groups = ["registered"]

[[mail]]
name = "invitation"
send_at = "start - 21d at 09:00"
to = ["all"]
calendar = true

[[mail]]
name = "reminder"
send_at = "start - 2d at 09:00"
to = ["registered"]
"""


def make_project(
    root: Path, *, transport: str = MAILDIR, connections: int = 2, backoff_first: str = "1s"
) -> Path:
    """Write config.toml and an empty schedules folder under `root`; returns the config path."""
    (root / "schedules").mkdir(parents=True, exist_ok=True)
    config = root / "config.toml"
    config.write_text(
        CONFIG.format(
            templates=TEMPLATES,
            transport=transport,
            connections=connections,
            backoff_first=backoff_first,
        ),
        encoding="utf-8",
    )
    return config


def write_event(
    root: Path,
    name: str,
    text: str = EVENT,
    *,
    starts: str = "2027-06-16T09:00:00",
    ends: str = "2027-06-16T12:00:00",
    **files: bytes | str,
) -> Path:
    """A single-file event (no extra files) or a folder event with its files."""
    text = textwrap.dedent(text).format(starts=starts, ends=ends) if "{starts}" in text else text
    if files:
        folder = root / "schedules" / name
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / "event.toml"
        for filename, content in files.items():
            path = folder / filename.replace("__", ".")
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    else:
        source = root / "schedules" / f"{name}.toml"
        source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text, encoding="utf-8")
    return source


def smtp_transport(port: int, *, security: str = "starttls") -> str:
    """A [transport] table for the test server; the password comes from the environment."""
    return f"""
[transport]
kind = "smtp"
host = "127.0.0.1"
port = {port}
security = "{security}"
username = "mailer"
password_env = "MAILER_SMTP_PASSWORD"
timeout = "3s"
"""


def timed_event(
    due: str, *, people: int = 2, starts: str = "2099-06-16T09:00:00", refused: str | None = None
) -> str:
    """An event whose one mail is due at `due` (a TOML datetime), to `people` recipients."""
    lines = [f'title = "Seminarium"\nstarts = {starts}\n']
    for i in range(people):
        lines.append(
            f'[[recipients.people]]\nemail = "person{i:05d}@example.org"\nname = "Person {i}"\n'
        )
    if refused:
        lines.append(f'[[recipients.people]]\nemail = "{refused}"\n')
    lines.append(f'[[mail]]\nname = "invitation"\nsend_at = {due}\nto = ["all"]\n')
    return "\n".join(lines)


@contextmanager
def tmpfs(mount: Path, *, size: str) -> Iterator[Path]:
    """A real small file system (tmpfs) at `mount`, for a disk that fills up; tests run as
    root, and only a real full disk shows what SQLite and the Maildir do then."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
