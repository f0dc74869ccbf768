"""An event -> its RFC 5545 calendar file (.ics), which every calendar reader reads alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar

from mailer.events import Event
from mailer.message import Attachment

PRODID = "-//mailer//mailer//EN"
# How far around an event its .ics describes the zone's offsets: readers need the offset at
# DTSTART and DTEND only; a year either side is slack for readers that look around them.
_ZONE_MARGIN = timedelta(days=366)


def calendar_attachment(event: Event, *, domain: str, now: datetime) -> Attachment:
    """An RFC 5545 VEVENT whose UID is stable per event, so an edit updates the calendar entry.

    Its times are local times in the event's zone, described by a VTIMEZONE in the file:
    Outlook, Apple Calendar and vobject take the offset from there, not from a zone database.
    """
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    vevent = icalendar.Event()
    vevent.add("uid", f"{event.id}@{domain}")
    vevent.add("dtstamp", now.astimezone(UTC))
    vevent.add("dtstart", event.starts)
    vevent.add("dtend", event.ends)
    vevent.add("summary", event.title)
    if event.location:
        vevent.add("location", event.location)
    if event.description:
        vevent.add("description", event.description)
    if event.organiser:
        organizer = icalendar.vCalAddress(f"mailto:{event.organiser.email}")
        if event.organiser.name:
            organizer.params["cn"] = icalendar.vText(event.organiser.name)
        vevent.add("organizer", organizer)
    cal.add_component(vevent)
    for tzid in sorted(cal.get_missing_tzids(), reverse=True):  # before the event, as icalendar
        try:
            zone = _vtimezone(tzid, event.starts - _ZONE_MARGIN, event.ends + _ZONE_MARGIN)
        except ValueError:  # a zone icalendar does not know: readers fall back on the TZID
            continue
        cal.subcomponents.insert(0, zone)
    return Attachment(f"{event.id}.ics", cal.to_ical(), charset="utf-8")


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
