"""The bounce mailbox, read every READ_EVERY_S (SPEC §11): each notice for one of our
deliveries recorded (a 5.x.x one bounces it, a 4.x.x one is an attempt), then marked read
(Maildir: moved to cur/ with `S`; IMAP: `\\Seen`); anything else left as it is, logged once.

A notice recorded but not marked (a crash in between) is read again at the next start and
recorded as "seen": the store keeps each notice's name, so nothing counts twice. Where the
messages come from is bounce_boxes.py's business; what they say, dsn.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from mailer.bounce_boxes import MAX_NOTICE_BYTES, BounceBox, open_box
from mailer.clock import Clock
from mailer.config_privacy import BouncesSettings
from mailer.dsn import Notice, Unmatched, read_notice
from mailer.keyring import Keyring
from mailer.store import Bounce, Store

log = logging.getLogger("mailer")

# SPEC §11 asks for "at least every minute"; half that leaves room for a slow pass.
READ_EVERY_S = 30.0


class BounceReader:
    """Reads one bounce mailbox into the store."""

    def __init__(
        self, settings: BouncesSettings, *, store: Store, keyring: Keyring, clock: Clock
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self._told: set[str] = set()  # unmatched messages already logged, by key

    async def read_once(self) -> Counter[str]:
        """One pass over the unread messages: how many were bounces, delays, seen before,
        or left alone."""
        counts: Counter[str] = Counter()
        box = open_box(self.settings)
        try:
            for key, raw in await box.unread():
                counts[await self._take(box, key, raw)] += 1
        finally:
            await box.close()
        return counts

    async def _take(self, box: BounceBox, key: str, raw: bytes | None) -> str:
        found = (
            read_notice(raw, keyring=self.keyring, bounce_address=self.settings.address)
            if raw is not None
            else Unmatched(f"larger than {MAX_NOTICE_BYTES} bytes")
        )
        if isinstance(found, Unmatched):
            if key not in self._told:
                self._told.add(key)
                log.warning("bounce mailbox: %s left alone: %s", key, found.why)
            return "unmatched"
        result = await self.store.record_bounce(self._bounce(found))
        await box.mark_read(key)
        kind = "bounced" if found.status.startswith("5") else "delayed"
        if result == "recorded":
            log.warning("delivery %d %s: %s", found.delivery, kind, found.reply)
            return kind
        if result == "unknown":
            log.warning(
                "bounce mailbox: %s is for delivery %d, which no longer exists",
                key,
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
                    log.error("bounce mailbox: cannot read it: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=READ_EVERY_S)
