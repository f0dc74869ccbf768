"""An event -> its RFC 5545 calendar file (.ics), which every calendar reader reads alike."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import icalendar

from mailer.events import Event, Recipient
from mailer.message import Attachment

PRODID = "-//mailer//mailer//EN"
# How far around an event its .ics describes the zone's offsets: readers need the offset at
# DTSTART and DTEND only; a year either side is slack for readers that look around them.
_ZONE_MARGIN = timedelta(days=366)


# RFC 5546 iTIP: an invitation and its updates are REQUESTs with the same UID and a higher
# SEQUENCE, a cancellation a CANCEL. Exchange and Google add an emailed PUBLISH as a copy and
# never move it (the `ics` package's issue #128); see docs/decisions.md.
REQUEST, CANCEL = "REQUEST", "CANCEL"


@dataclass(frozen=True)
class Identity:
    """Who a calendar file is from and which revision it is (SPEC §10): the event's own UID,
    its SEQUENCE from the database, the METHOD, and the ORGANIZER iTIP requires."""

    sequence: int = 0
    method: str = REQUEST
    organiser_name: str = ""
    organiser_email: str = "mailer@localhost"


def calendar_attachment(
    event: Event,
    *,
    domain: str,
    now: datetime,
    identity: Identity | None = None,
    attendee: Recipient | None = None,
) -> Attachment:
    """An RFC 5545 VEVENT whose UID is stable per event, so an edit updates the calendar entry.

    Its times are local times in the event's zone, described by a VTIMEZONE in the file:
    Outlook, Apple Calendar and vobject take the offset from there, not from a zone database.
    """
    return with_attendee(calendar_file(event, domain=domain, now=now, identity=identity), attendee)


def calendar_file(
    event: Event, *, domain: str, now: datetime, identity: Identity | None = None
) -> Attachment:
    """The calendar file without an ATTENDEE: the same for every recipient of one mail."""
    identity = identity or Identity()
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", identity.method)
    vevent = icalendar.Event()
    vevent.add("uid", f"{event.id}@{domain}")
    vevent.add("sequence", identity.sequence)
    vevent.add("dtstamp", now.astimezone(UTC))
    vevent.add("dtstart", event.starts)
    vevent.add("dtend", event.ends)
    vevent.add("summary", event.title)
    vevent.add("status", "CANCELLED" if identity.method == CANCEL else "CONFIRMED")
    if event.location:
        vevent.add("location", event.location)
    if event.description:
        vevent.add("description", event.description)
    name, email = identity.organiser_name, identity.organiser_email
    if event.organiser:
        name, email = event.organiser.name, event.organiser.email
    organizer = icalendar.vCalAddress(f"mailto:{email}")
    if name:
        organizer.params["cn"] = icalendar.vText(name)
    vevent.add("organizer", organizer)
    cal.add_component(vevent)
    for tzid in sorted(cal.get_missing_tzids(), reverse=True):  # before the event, as icalendar
        try:
            zone = _vtimezone(tzid, event.starts - _ZONE_MARGIN, event.ends + _ZONE_MARGIN)
        except ValueError:  # a zone icalendar does not know: readers fall back on the TZID
            continue
        cal.subcomponents.insert(0, zone)
    return Attachment(f"{event.id}.ics", cal.to_ical(), charset="utf-8", method=identity.method)


def with_attendee(ics: Attachment, attendee: Recipient | None) -> Attachment:
    """The file with the one ATTENDEE iTIP wants in a REQUEST: the recipient of this message.
    RSVP=FALSE: nobody is asked to answer (the organiser gets no flood of replies)."""
    if attendee is None:
        return ics
    address = icalendar.vCalAddress(f"mailto:{attendee.address}")
    if attendee.name:
        address.params["cn"] = icalendar.vText(attendee.name)
    address.params["rsvp"] = "FALSE"
    address.params["partstat"] = "NEEDS-ACTION"
    holder = icalendar.Event()  # its content line, folded as icalendar folds every line
    holder.add("attendee", address)
    line = holder.to_ical().removeprefix(b"BEGIN:VEVENT\r\n").removesuffix(b"END:VEVENT\r\n")
    data = ics.data.replace(b"END:VEVENT\r\n", line + b"END:VEVENT\r\n", 1)
    return dataclasses.replace(ics, data=data)


def _vtimezone(tzid: str, first: datetime, last: datetime) -> icalendar.Timezone:
    """The zone's offsets from `first` to `last`, one STANDARD or DAYLIGHT per change.

    icalendar lists the changes with the same offsets as the RDATEs of one component, and
    vobject (through dateutil) reads only the first of them: 09:00 in June came out +01:00.
    A component per change is as RFC 5545 allows, and every reader reads it the same.
    """
    zone = icalendar.Timezone.from_tzid(tzid, first_date=first.date(), last_date=last.date())
    changes = []
    for part in zone.subcomponents:
        rdates = part.pop("RDATE", [])
        onsets = [part.decoded("DTSTART")] + [
            when.dt
            for rdate in (rdates if isinstance(rdates, list) else [rdates])
            for when in rdate.dts
        ]
        for onset in onsets:
            change = part.copy()
            change.subcomponents = []
            del change["DTSTART"]
            change.add("dtstart", onset)
            changes.append((onset, change))
    zone.subcomponents = [change for _, change in sorted(changes, key=lambda pair: pair[0])]
    zone.pop("COMMENT", None)  # icalendar's "only works from ... to ...": true, and noise
    return zone
