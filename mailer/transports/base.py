"""What every transport promises: hand over one message for one recipient, say how it went."""

from __future__ import annotations

from typing import Protocol

from mailer.delivery import Outcome


class Transport(Protocol):
    """Sends flattened messages. `send` may be called concurrently; the transport bounds it."""

    async def send(self, message: bytes, *, sender: str, recipient: str) -> Outcome: ...

    async def close(self) -> None: ...
