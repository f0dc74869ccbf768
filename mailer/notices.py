"""When an event changes after mail went out (SPEC §10): what a calendar shows of it, whether
an edit changed that, and the notice (`update` or `cancellation`) that tells people (pure).

The facts are kept in the database as JSON (`facts_json`): an edit is compared with the facts
last announced, so a change undone before it settles compares equal and sends nothing, and a
description-only edit changes no fact at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.events import Event, Mail
from mailer.mails import NOTICES

__all__ = ["NOTICES", "Facts", "changes_between", "notice_kind", "notice_mail"]


@dataclass(frozen=True)
class Facts:
    """What a calendar entry shows of an event: a change to any of these is a change worth a
    notice (SPEC §10's list, and the title, which is the entry's name in every calendar)."""

    title: str
    starts: float  # unix seconds
    ends: float
    timezone: str
    location: str
    cancelled: bool

    @classmethod
    def of(cls, event: Event) -> Facts:
        return cls(
            event.title,
            event.starts.timestamp(),
            event.ends.timestamp(),
            event.timezone.key,
            event.location or "",
            event.cancelled,
        )

    def to_json(self) -> str:
        """Sorted keys: the database compares these texts for equality."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Facts:
        return cls(**json.loads(text))


def notice_kind(before: Facts, after: Facts) -> str:
    """`cancellation` when the event became cancelled, else `update` (also when it came back)."""
    return "cancellation" if after.cancelled and not before.cancelled else "update"


def told_by(kind: str, calendar_mails: list[str]) -> list[str] | None:
    """The mails whose recipients get a notice of this kind: a cancellation everyone who got
    anything (None: any mail), an update those with a calendar entry to move, and those told
    of a cancellation that is now undone."""
    if kind == "cancellation":
        return None
    return [*calendar_mails, *NOTICES]


def changes_between(before: Facts, after: Facts, zone: ZoneInfo) -> tuple[dict[str, Any], ...]:
    """Old -> new of what changed, for the notice's template: times as aware datetimes in the
    event's zone, so the template's date filters write them in the reader's language."""
    changes: list[dict[str, Any]] = []
    for what in ("title", "starts", "ends", "location"):
        old, new = getattr(before, what), getattr(after, what)
        if what in ("starts", "ends"):
            old_zone, new_zone = ZoneInfo(before.timezone), ZoneInfo(after.timezone)
            old = datetime.fromtimestamp(old, old_zone)
            new = datetime.fromtimestamp(new, new_zone)
            if old == new and old_zone == new_zone:
                continue
        elif old == new:
            continue
        changes.append({"what": what, "old": old, "new": new})
    if before.timezone != after.timezone and not any(c["what"] == "starts" for c in changes):
        changes.append({"what": "timezone", "old": before.timezone, "new": after.timezone})
    return tuple(changes)


def notice_mail(
    event: Event, kind: str, *, changes: tuple[dict[str, Any], ...], calendar: bool
) -> Mail:
    """The notice as a mail of the event: it ages out when the event ends (SPEC §10)."""
    return Mail(
        index=len(event.mails),
        name=kind,
        due=event.starts,
        expires=event.ends,
        to=("all",),
        template=kind,
        calendar=calendar,
        changes=changes,
    )


def notice_message_id(
    event_id: str, kind: str, sequence: int, recipient: str, *, domain: str
) -> str:
    """Each round's notice is a message of its own: a second update to the same person is a
    new message, while a retry of one round keeps its Message-ID."""
    basis = f"{event_id}\0{kind}\0{sequence}\0{recipient}"
    return f"<{hashlib.sha256(basis.encode()).hexdigest()[:32]}@{domain}>"
