"""`max_per_minute` for every node together (SPEC §9): each message takes its turn from the
database before it leaves, so the nodes on one database send at the configured rate between
them, evenly spaced (one every 60/max_per_minute seconds, never a minute's worth at once).

One row holds the instant the next message may leave; a reservation moves it on by one
interval in a one-row transaction (a round trip per message: at 600 a minute, ten a second).
The wait itself is on the loop's monotonic clock; only the turn is in wall-clock seconds,
the one clock the nodes share.
"""

from __future__ import annotations

import asyncio

from mailer.clock import Clock
from mailer.store import Store


class SharedPace:
    """The limiter of `SmtpTransport` (`transports.base.Pace`) for all nodes of a database."""

    def __init__(self, store: Store, *, max_per_minute: int, clock: Clock) -> None:
        self.store = store
        self.interval_s = 60 / max_per_minute
        self.clock = clock

    async def acquire(self) -> None:
        """Reserve the next turn, and wait for it."""
        now = self.clock.now().timestamp()
        turn = await self.store.reserve_turn(now, interval_s=self.interval_s)
        if turn > now:
            await asyncio.sleep(turn - now)
