"""What every transport promises: hand over one message for one recipient, say how it went."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Verdict(enum.Enum):
    """How a hand-over ended, as far as the delivery's next state is concerned."""

    SENT = "sent"  # accepted: never send again
    RETRY = "retry"  # 4xx, timeout, dropped connection: try again later
    FAIL = "fail"  # 5xx: the server refused, retrying would repeat the refusal


@dataclass(frozen=True)
class Outcome:
    """The verdict with the server's own words, kept in the attempt log and shown in status."""

    verdict: Verdict
    reply: str
    code: int | None = None
    # The server cannot be used as configured (login refused, certificate refused, no
    # STARTTLS): not this message's fault, and every other message would fail the same way.
    needs_attention: bool = False


class Transport(Protocol):
    """Sends flattened messages. `send` may be called concurrently; the transport bounds it."""

    async def send(self, message: bytes, *, sender: str, recipient: str) -> Outcome: ...

    async def close(self) -> None: ...
