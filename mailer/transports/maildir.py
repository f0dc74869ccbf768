"""Writes each message as one file of a standard Maildir: the no-server transport."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

from mailer.transports.base import Outcome, Verdict


class MaildirTransport:
    """Delivers into `path/new`, readable by any mail client or `mailbox.Maildir`.

    mailbox writes into `tmp/` and renames into `new/`, so a crash never leaves half a message.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._box: mailbox.Maildir | None = None
        # One writer at a time: concurrent first sends would race to create the folders, and
        # mailbox's names for temporary files are not safe across threads.
        self._lock = asyncio.Lock()

    async def send(self, message: bytes, *, sender: str, recipient: str) -> Outcome:
        try:
            async with self._lock:
                key = await asyncio.to_thread(self._add, message)
        except OSError as exc:
            # A full disk or a folder we may not write to: nothing was delivered, try later.
            return Outcome(
                Verdict.RETRY, f"cannot write to the Maildir {self.path}: {exc.strerror}"
            )
        return Outcome(Verdict.SENT, f"written to {self.path}/new/{key}")

    def _add(self, message: bytes) -> str:
        if self._box is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # mailbox makes only the last
            self._box = mailbox.Maildir(self.path, create=True)
        return self._box.add(message)

    async def close(self) -> None:
        self._box = None
