"""What every transport promises: hand over one message for one recipient, say how it went."""

from __future__ import annotations

from typing import Protocol

from mailer.delivery import Outcome


class Transport(Protocol):
    """Sends flattened messages. `send` may be called concurrently; the transport bounds it."""

    async def send(self, message: bytes, *, sender: str, recipient: str) -> Outcome: ...

    async def close(self) -> None: ...


class Pace(Protocol):
    """Spaces messages out (`max_per_minute`): `acquire` returns when the next may leave.
    aiolimiter's AsyncLimiter is one (this process's sessions); `mailer.pacing.SharedPace`
    another (every node's, through the database)."""

    async def acquire(self) -> None: ...
