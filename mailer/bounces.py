"""The bounce mailbox, read every READ_EVERY_S (SPEC §11): each notice for one of our
deliveries recorded (a 5.x.x one bounces it, a 4.x.x one is an attempt), then moved to cur/
with the `S` flag; anything else left where it is, logged once.

A Maildir by hand (list new/, rename into cur/), as maildir.py writes one: the protocol is
two renames, and `mailbox.Maildir` would rewrite each message to change its flags. A notice
recorded but not moved (a crash in between) is read again at the next start and recorded
as "seen": the store keeps each notice's name, so nothing counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from pathlib import Path

from mailer.clock import Clock
from mailer.config_privacy import BouncesSettings
from mailer.dsn import Notice, Unmatched, read_notice
from mailer.keyring import Keyring
from mailer.store import Bounce, Store

log = logging.getLogger("mailer")

# SPEC §11 asks for "at least every minute"; half that leaves room for a slow pass.
READ_EVERY_S = 30.0
# A notice bigger than this is not read (a bounce quoting a huge attachment): left alone.
MAX_NOTICE_BYTES = 10 * 1024 * 1024


class BounceReader:
    """Reads one Maildir of bounces into the store."""

    def __init__(
        self, settings: BouncesSettings, *, store: Store, keyring: Keyring, clock: Clock
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self._told: set[str] = set()  # unmatched messages already logged, by file name

    async def read_once(self) -> Counter[str]:
        """One pass over new/: how many notices were bounces, delays, seen, left alone."""
        counts: Counter[str] = Counter()
        for path in await asyncio.to_thread(_new_messages, self.settings.path):
            counts[await self._take(path)] += 1
        return counts

    async def _take(self, path: Path) -> str:
        try:
            raw = await asyncio.to_thread(_read, path)
        except OSError:  # moved or deleted by a mail client meanwhile: not ours to worry
            return "gone"
        found = (
            read_notice(raw, keyring=self.keyring, bounce_address=self.settings.address)
            if raw is not None
            else Unmatched(f"larger than {MAX_NOTICE_BYTES} bytes")
        )
        if isinstance(found, Unmatched):
            if path.name not in self._told:
                self._told.add(path.name)
                log.warning("bounce mailbox: %s left alone: %s", path.name, found.why)
            return "unmatched"
        result = await self.store.record_bounce(self._bounce(found))
        await asyncio.to_thread(_mark_seen, path)
        kind = "bounced" if found.status.startswith("5") else "delayed"
        if result == "recorded":
            log.warning("delivery %d %s: %s", found.delivery, kind, found.reply)
            return kind
        if result == "unknown":
            log.warning(
                "bounce mailbox: %s is for delivery %d, which no longer exists",
                path.name,
                found.delivery,
            )
        return result

    def _bounce(self, notice: Notice) -> Bounce:
        return Bounce(
            notice.notice,
            notice.delivery,
            self.clock.now().timestamp(),
            notice.status,
            notice.reply,
            notice.code,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Read every READ_EVERY_S until stopped; a failed pass is logged (once per kind)
        and the next one tries again, so the reader never silently ends."""
        failed: set[str] = set()
        while not stopping.is_set():
            try:
                await self.read_once()
                failed.clear()
            except Exception as exc:  # whatever failed: say it, try again in a while
                kind = type(exc).__name__
                if kind not in failed:
                    failed.add(kind)
                    log.error("bounce mailbox %s: cannot read it: %s", self.settings.path, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=READ_EVERY_S)


def _new_messages(folder: Path) -> list[Path]:
    """new/'s messages, oldest name first; none if the folder is not there yet."""
    new = folder / "new"
    if not new.is_dir():
        return []
    return sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith("."))


def _read(path: Path) -> bytes | None:
    if path.stat().st_size > MAX_NOTICE_BYTES:
        return None
    return path.read_bytes()


def _mark_seen(path: Path) -> None:
    """new/<name> -> cur/<name>:2,S (Maildir: read, seen)."""
    cur = path.parent.parent / "cur"
    cur.mkdir(exist_ok=True)
    path.rename(cur / f"{path.name.split(':')[0]}:2,S")
