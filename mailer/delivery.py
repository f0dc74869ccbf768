"""The words of one delivery's life, shared by plan, policy, store, transports and engine:
its state, how a hand-over ended (verdict), what the server said (outcome), and a delivery as
the plan wants it and as the store holds it. Pure values, importing nothing of ours, so the
store and `mailer status` read them without loading the planner's templates and rendering."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


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
# In trouble: `mailer status` shows each mail's newest server reply among these.
TROUBLED = frozenset({DeliveryState.RETRYING, DeliveryState.FAILED, DeliveryState.BOUNCED})
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


class Wanted(NamedTuple):
    """A delivery the event asks for now. (A tuple: made 200,000 times at a cold start, at
    a third of a frozen dataclass's cost.)"""

    mail: str
    recipient: str
    due: float
    expires: float
    message_id: str


@dataclass(frozen=True)
class Stored:
    """A delivery the database already has."""

    id: int
    mail: str
    recipient: str
    due: float
    expires: float
    state: DeliveryState
