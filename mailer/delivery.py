"""The words of one delivery's life, shared by plan, policy, store, transports and engine:
its state, how a hand-over ended (verdict) and what the server said (outcome). Pure values."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DeliveryState(enum.StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    # Accepted by the relay, then returned by a mail server on the way (a delivery status
    # notification read from the bounce mailbox, SPEC §11): the person never got it.
    BOUNCED = "bounced"


# Waiting to go out: the plan may still move or cancel them.
PENDING = frozenset({DeliveryState.SCHEDULED, DeliveryState.RETRYING})
# Ended without being sent; a plan that wants them again (a recipient put back, an event
# moved) brings them back.
REVIVABLE = frozenset({DeliveryState.CANCELLED, DeliveryState.EXPIRED})


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
