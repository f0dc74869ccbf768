"""Events + stored deliveries -> what to insert, retime, revive and cancel (pure).

Start-up, hot reload and `rehearse` all plan through `plan_event` (by way of
`planning.plan_version`, which the catalog calls); none re-implements it.
Times are unix seconds (UTC), as the store keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailer.delivery import PENDING, REVIVABLE, DeliveryState, Stored, Wanted
from mailer.events import Event
from mailer.message import message_id


@dataclass(frozen=True)
class Retime:
    id: int
    due: float
    expires: float


@dataclass(frozen=True)
class Plan:
    """The changes that make the database match one event."""

    event_id: str
    inserts: tuple[Wanted, ...] = ()
    retimes: tuple[Retime, ...] = ()
    revives: tuple[Retime, ...] = ()
    cancels: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """How many deliveries it writes."""
        return len(self.inserts) + len(self.retimes) + len(self.revives) + len(self.cancels)

    @property
    def is_empty(self) -> bool:
        return self.size == 0

    def summary(self) -> str:
        return (
            f"{len(self.inserts)} added, {len(self.retimes)} retimed, "
            f"{len(self.revives)} revived, {len(self.cancels)} cancelled"
        )


def wanted_deliveries(event: Event, *, domain: str) -> list[Wanted]:
    """Every (mail, recipient) pair the event asks for, with its times.

    A hot loop at start (200,000 pairs for 1,000 events): each mail's times are computed
    once, not once per recipient.
    """
    wanted = []
    for mail in event.mails:
        due, expires = mail.due.timestamp(), mail.expires.timestamp()
        wanted += [
            Wanted(
                mail.name, key, due, expires, message_id(event.id, mail.name, key, domain=domain)
            )
            for key in (recipient.key for recipient in event.recipients_of(mail))
        ]
    return wanted


def plan_event(event_id: str, wanted: Iterable[Wanted], stored: Iterable[Stored]) -> Plan:
    """Compare what the event wants with what is stored.

    Sent deliveries are history and never touched. One being sent right now is left alone
    too: its outcome is recorded as it happens, and the sender checks before each message
    that the event still wants it, so no delivery is both cancelled and sent.
    """
    by_key = {(s.mail, s.recipient): s for s in stored}
    inserts, retimes, revives = [], [], []
    for want in wanted:
        have = by_key.pop((want.mail, want.recipient), None)
        if have is None:
            inserts.append(want)
        elif (have.due, have.expires) == (want.due, want.expires):
            if have.state == DeliveryState.CANCELLED:
                revives.append(Retime(have.id, want.due, want.expires))
        elif have.state in PENDING:
            retimes.append(Retime(have.id, want.due, want.expires))
        elif have.state in REVIVABLE:
            revives.append(Retime(have.id, want.due, want.expires))
    cancels = [s.id for s in by_key.values() if s.state in PENDING]
    return Plan(event_id, tuple(inserts), tuple(retimes), tuple(revives), tuple(cancels))
