"""systemd's notify protocol (`Type=notify`, sd_notify(3)): one datagram per state change to
the Unix socket $NOTIFY_SOCKET names. A few lines of the standard library; nothing at all
when the variable is unset (not under systemd, or `Type=exec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

log = logging.getLogger("mailer")


class Notifier:
    """Tells systemd READY=1, WATCHDOG=1 and STOPPING=1."""

    def __init__(self, address: str | None, *, watchdog_s: float | None) -> None:
        # An abstract socket is written "@name" and is "\0name" on the wire.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_s = watchdog_s  # systemd's WatchdogSec; None if it has none

    @classmethod
    def from_environment(cls) -> Notifier:
        """$NOTIFY_SOCKET, and $WATCHDOG_USEC unless $WATCHDOG_PID names another process."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and ours else None
        return cls(os.environ.get("NOTIFY_SOCKET") or None, watchdog_s=watchdog_s)

    def send(self, state: str) -> None:
        """One datagram; a socket that is gone is logged, never a reason to stop."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("systemd notify socket %s: %s", self.address.lstrip("\0"), exc)

    async def keep_alive(self, stopping: asyncio.Event) -> None:
        """WATCHDOG=1 at half of systemd's interval, from the loop: a loop that stops turning
        stops the pings, and systemd restarts the service."""
        if self.watchdog_s is None:
            return
        while not stopping.is_set():
            self.send("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.watchdog_s / 2)
