"""The bounce mailbox (SPEC §11): its unread messages, and marking one read once it is
processed. A Maildir (`new/` -> `cur/` with the `S` flag) or an IMAP folder over TLS
(`\\Seen`), one pass at a time.

The Maildir by hand, as transports/maildir.py writes one: the protocol is a rename, and
`mailbox.Maildir` would rewrite each message to change its flags. IMAP through the standard
`imaplib` in a thread: one session per pass (every 30 s), a handful of commands, nothing
that needs an asyncio client; the certificate is verified (the system's CAs or `ca_file`).
Messages are fetched with BODY.PEEK, so reading one does not mark it: only a processed one
is flagged, and whatever is not ours stays unread for whoever else reads the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import ssl
from pathlib import Path
from typing import Any, Protocol

from mailer.config_privacy import BouncesSettings

# A notice bigger than this is not read (a bounce quoting a huge attachment): left alone.
MAX_NOTICE_BYTES = 10 * 1024 * 1024
# Most messages taken in one pass: a flood of spam into the box cannot hold a pass for long.
MAX_PER_PASS = 200
IMAP_TIMEOUT_S = 30.0
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class BounceBox(Protocol):
    """One pass over a mailbox: `unread()`, then `mark_read()` per processed message,
    then `close()`."""

    async def unread(self) -> list[tuple[str, bytes | None]]:
        """(key, bytes) of each unread message, oldest first; None for one too big to read."""
        ...

    async def mark_read(self, key: str) -> None: ...

    async def close(self) -> None: ...


def open_box(settings: BouncesSettings) -> BounceBox:
    if settings.kind == "imap":
        return ImapBox(settings)
    return MaildirBox(settings.path)


class MaildirBox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def unread(self) -> list[tuple[str, bytes | None]]:
        return await asyncio.to_thread(self._unread)

    def _unread(self) -> list[tuple[str, bytes | None]]:
        new = self.folder / "new"
        if not new.is_dir():  # nothing delivered yet
            return []
        found: list[tuple[str, bytes | None]] = []
        for path in sorted(new.iterdir())[:MAX_PER_PASS]:
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                found.append((path.name, _read(path)))
            except OSError:  # moved or deleted by a mail client meanwhile
                continue
        return found

    async def mark_read(self, key: str) -> None:
        """new/<name> -> cur/<name>:2,S (Maildir: seen)."""
        await asyncio.to_thread(self._move, key)

    def _move(self, key: str) -> None:
        cur = self.folder / "cur"
        cur.mkdir(exist_ok=True)
        # Gone already: another node reading the same box moved it (it was recorded once).
        with contextlib.suppress(FileNotFoundError):
            (self.folder / "new" / key).rename(cur / f"{key.split(':')[0]}:2,S")

    async def close(self) -> None:
        pass


def _read(path: Path) -> bytes | None:
    return None if path.stat().st_size > MAX_NOTICE_BYTES else path.read_bytes()


class ImapBox:
    """One IMAP session over TLS for one pass; messages keyed by UID."""

    def __init__(self, settings: BouncesSettings) -> None:
        self.settings = settings
        self._session: imaplib.IMAP4_SSL | None = None

    async def unread(self) -> list[tuple[str, bytes | None]]:
        return await asyncio.to_thread(self._unread)

    def _unread(self) -> list[tuple[str, bytes | None]]:
        session = self._connect()
        _, data = _ok(session.uid("SEARCH", "UNSEEN"), "SEARCH UNSEEN")
        found: list[tuple[str, bytes | None]] = []
        uids = data[0] if isinstance(data[0], bytes) else b""
        for uid in uids.split()[:MAX_PER_PASS]:
            found.append((uid.decode(), self._fetch(session, uid.decode())))
        return found

    def _connect(self) -> imaplib.IMAP4_SSL:
        settings = self.settings
        assert settings.host and settings.username and settings.password
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
        session = imaplib.IMAP4_SSL(
            settings.host, settings.port, ssl_context=context, timeout=IMAP_TIMEOUT_S
        )
        self._session = session
        _ok(session.login(settings.username, settings.password.get_secret_value()), "LOGIN")
        _ok(session.select(_quoted(settings.folder)), f"SELECT {settings.folder}")
        return session

    def _fetch(self, session: imaplib.IMAP4_SSL, uid: str) -> bytes | None:
        _, sized = _ok(session.uid("FETCH", uid, "(RFC822.SIZE)"), "FETCH")
        size = _SIZE.search(sized[0] if isinstance(sized[0], bytes) else b"")
        if size and int(size[1]) > MAX_NOTICE_BYTES:
            return None
        _, data = _ok(session.uid("FETCH", uid, "(BODY.PEEK[])"), "FETCH")
        for part in data:
            if isinstance(part, tuple):
                return bytes(part[1])
        return b""

    async def mark_read(self, key: str) -> None:
        session = self._session
        assert session is not None
        await asyncio.to_thread(lambda: _ok(session.uid("STORE", key, "+FLAGS", r"(\Seen)")))

    async def close(self) -> None:
        if self._session is not None:
            await asyncio.to_thread(_logout, self._session)
            self._session = None


def _ok(answer: tuple[str, Any], what: str = "STORE") -> tuple[str, list[Any]]:
    status, data = answer
    if status != "OK":
        raise imaplib.IMAP4.error(f"{what}: {status} {data!r}")
    return status, list(data)


def _quoted(folder: str) -> str:
    """A folder name as an IMAP quoted string ("Bounces", "INBOX/Studsar")."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _logout(session: imaplib.IMAP4_SSL) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error):  # the server went first
        session.logout()
