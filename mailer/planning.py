"""An event as read and its stored deliveries -> the version to keep and its plan (pure).

The one planning pipeline: start-up, hot reload and `mailer rehearse` (through the catalog),
and `check`'s "what this edit will do" (SPEC §10), plan through these functions; none
re-implements them. `read_version` is the costly half (every delivery the event wants, with
its Message-ID: 200,000 at a cold start), so it runs where the file is read, in a worker
process at start; `plan_version` is the half that needs the deliveries stored.

Planning needs no clock: a delivery already due is inserted due and goes out at once, and
one past its expiry is expired when it is claimed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mailer.config import Settings
from mailer.events import Event
from mailer.keyring import is_erased
from mailer.notices import NOTICES, Facts
from mailer.plan import Stored, Wanted, plan_event, wanted_deliveries
from mailer.sources import Loaded
from mailer.store.rows import EventRow, File, Version

# Part of every plan digest: changed when what a plan stores grows, so that the first start of
# a new mailer plans every event once. "calendar": SPEC §10's facts and `calendar` per mail,
# without which an event planned before would take its first move as its first revision.
PLANNED_WITH = "calendar"


@dataclass(frozen=True)
class Reading:
    """A valid event file as planning needs it: what the store keeps, what the event wants."""

    version: Version  # without its plan: that takes the stored deliveries
    wanted: list[Wanted]
    # The parsed event only when asked for (one the catalog holds parsed): a worker process
    # sends readings back pickled, and at start the catalog keeps none parsed.
    event: Event | None = None

    @property
    def event_id(self) -> str:
        return self.version.event_id

    @property
    def source(self) -> Path:
        return Path(self.version.source)


def read_version(loaded: Loaded, settings: Settings, *, keep_event: bool = False) -> Reading:
    """A valid event as planning needs it: its version to keep, and what it wants."""
    event = loaded.event
    assert event is not None, "only a valid event is planned"
    mails = [
        {
            "name": m.name,
            "due": m.due.timestamp(),
            "expires": m.expires.timestamp(),
            "to": m.to,
            "calendar": m.calendar,
        }
        for m in event.mails
    ]
    version = Version(
        event.id,
        str(loaded.source),
        event.title,
        plan_digest(loaded.digest, settings),
        loaded.toml,
        loaded.csv,
        json.dumps(mails),
        facts=Facts.of(event).to_json(),
        held=event.hold,
        notify=event.notify_changes,
        files=tuple(
            File(name, hashlib.sha256(data).hexdigest(), data)
            for name, data in sorted(loaded.files.items())
        ),
        ends=event.ends.timestamp(),
        stamp=loaded.stamp,
    )
    # A cancelled event wants nothing: its pending mails are cancelled, and brought back
    # (revived) when the key is removed (SPEC §10).
    wanted = (
        []
        if event.cancelled
        else wanted_deliveries(event, domain=settings.sender.message_id_domain)
    )
    return Reading(version, wanted, event if keep_event else None)


def plan_digest(content_digest: str, settings: Settings) -> str:
    """The plan depends on the files and on the settings that shape times and IDs."""
    sending, sender = settings.sending, settings.sender
    basis = (
        f"{content_digest}|{sending.max_lateness}|{sender.timezone}|{sender.language}|"
        f"{sender.message_id_domain}|{sender.holidays}|{PLANNED_WITH}"
    )
    return hashlib.sha256(basis.encode()).hexdigest()


def is_planned(digest: str, row: EventRow | None) -> bool:
    """Whether the stored deliveries already follow the version with this plan digest: it
    was the last one planned and its file has not been deleted since (a deletion cancels
    them, and putting the same file back must bring them back). Then planning is skipped,
    and the stored deliveries need not even be read (most events, at a warm start)."""
    return row is not None and row.digest == digest and not row.removed


def plan_version(
    reading: Reading, stored: Iterable[Stored], *, erase: Callable[[str], str] | None = None
) -> Version:
    """The version to keep, carrying the plan that makes the stored deliveries match it.

    `erase` (keyring.Keyring.erased) when some stored deliveries had their address erased
    (SPEC §13): a person of the event file whose erased address is stored is that delivery,
    not a new one, so an event that comes back after its purge plans no duplicate."""
    own = [s for s in stored if s.mail not in NOTICES]  # notices are announce()'s, not planned
    wanted = reading.wanted
    if erase is not None:
        wanted = with_erased(wanted, own, erase)
    plan = plan_event(reading.event_id, wanted, own)
    return dataclasses.replace(reading.version, plan=plan)


def with_erased(
    wanted: list[Wanted], stored: Iterable[Stored], erase: Callable[[str], str]
) -> list[Wanted]:
    """Each wanted delivery whose address is stored erased, under its erased address."""
    erased = {(s.mail, s.recipient) for s in stored if is_erased(s.recipient)}
    if not erased:
        return wanted
    found = []
    for w in wanted:
        hashed = erase(w.recipient)
        found.append(w._replace(recipient=hashed) if (w.mail, hashed) in erased else w)
    return found


@dataclass(frozen=True)
class Retimed:
    """A mail whose due time an edit moves; `deliveries` of it still waiting move along."""

    mail: str
    old: float  # due, unix seconds
    new: float
    deliveries: int


@dataclass(frozen=True)
class EditEffect:
    """What saving an edited file would do to the event in force (SPEC §10, `mailer check`)."""

    event_id: str
    retimed: tuple[Retimed, ...] = ()
    added: tuple[tuple[str, str], ...] = ()  # (mail, recipient) that would be planned
    cancelled: tuple[tuple[str, str], ...] = ()  # (mail, recipient) waiting, then not sent
    # (notice, recipient): the update or cancellation saving it would send once the change
    # settles (SPEC §10), as announcing.announce_settled would queue it (foresight.py).
    notices: tuple[tuple[str, str], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.retimed or self.added or self.cancelled or self.notices)


def edit_effect(
    reading: Reading,
    stored: Iterable[Stored],
    *,
    in_force: str,
    notices: tuple[tuple[str, str], ...] = (),
) -> EditEffect:
    """The difference between the version in force (its mails as the store keeps them,
    `in_force`, JSON) and the file as read now: planned by `plan_event`, the one planner, so
    `check` says exactly what the service would do with the file. Stored notices are not the
    planner's (plan_version leaves them out too); `notices` are those the change would send."""
    stored = [s for s in stored if s.mail not in NOTICES]
    plan = plan_event(reading.event_id, reading.wanted, stored)
    by_id = {s.id: s for s in stored}
    moved = [by_id[r.id].mail for r in plan.retimes]
    old = {m["name"]: m["due"] for m in json.loads(in_force)}
    retimed = tuple(
        Retimed(m["name"], old[m["name"]], m["due"], moved.count(m["name"]))
        for m in json.loads(reading.version.mails)
        if m["name"] in old and old[m["name"]] != m["due"]
    )
    brought_back = [(by_id[r.id].mail, by_id[r.id].recipient) for r in plan.revives]
    added = sorted([(w.mail, w.recipient) for w in plan.inserts] + brought_back)
    cancelled = sorted((by_id[i].mail, by_id[i].recipient) for i in plan.cancels)
    return EditEffect(reading.event_id, retimed, tuple(added), tuple(cancelled), notices)
