"""Writes each message as one file of a standard Maildir: the no-server transport."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from pathlib import Path

from mailer.delivery import Outcome, Verdict

SUBFOLDERS = ("tmp", "new", "cur")


class MaildirTransport:
    """Delivers into `path/new`, readable by any mail client or `mailbox.Maildir`.

    The Maildir protocol by hand rather than `mailbox.Maildir.add`, which leaves a
    half-written file in `tmp/` when the disk fills (its final flush is outside its clean-up)
    and never creates `tmp/` or `cur/` in a folder that already exists. Here a message is
    written to `tmp/`, synced, and renamed into `new/`: a reader sees all of it or nothing,
    and a failed write leaves nothing behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._is_ready = False
        self._counter = itertools.count()

    async def send(self, message: bytes, *, sender: str, recipient: str) -> Outcome:
        try:
            name = await asyncio.to_thread(self._deliver, _with_return_path(message, sender))
        except OSError as exc:
            # A full disk or a folder we cannot write to: nothing was delivered, try later.
            self._is_ready = False
            return Outcome(
                Verdict.RETRY, f"cannot write to the Maildir {self.path}: {exc.strerror}"
            )
        return Outcome(Verdict.SENT, f"written to {self.path}/new/{name}")

    def _deliver(self, message: bytes) -> str:
        if not self._is_ready:
            for folder in SUBFOLDERS:
                (self.path / folder).mkdir(parents=True, exist_ok=True)
            self._is_ready = True
        # Unique per delivery: time, process, a counter and the host, as Maildir prescribes.
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._counter)}.{socket.gethostname()}"
        temporary = self.path / "tmp" / name
        try:
            with temporary.open("xb") as file:
                file.write(message)
                file.flush()
                os.fsync(file.fileno())
            temporary.rename(self.path / "new" / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return name

    async def close(self) -> None:
        self._is_ready = False


def _with_return_path(message: bytes, sender: str) -> bytes:
    """The envelope sender on top, as a mail server's local delivery writes it (RFC 5321
    §4.4): so a Maildir shows each message's bounce address, as the relay would see it."""
    line_end = b"\r\n" if message.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    return b"Return-Path: <" + sender.encode() + b">" + line_end + message
