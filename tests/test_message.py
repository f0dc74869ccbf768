"""Messages parsed back as a mail client would: one recipient, Swedish intact, stable IDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject

from mailer.errors import InputError
from mailer.events import Event, Mail, Organiser, Recipient
from mailer.ics import CANCEL, Identity, calendar_attachment
from mailer.message import Attachment, Sender, build_message, message_id
from mailer.render import Rendered
from mailer.text_parts import with_parts

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NOW = datetime(2027, 5, 26, 7, 0, tzinfo=UTC)
SENDER = Sender("samhallskontraktet@example.org", "Samhällskontraktet", None, "example.org")
EVENT = Event(
    id="forlabb",
    source=Path("schedules/forlabb/event.toml"),
    title="Förlabb: Skolnärvaro",
    starts=datetime(2027, 6, 16, 9, tzinfo=STOCKHOLM),
    ends=datetime(2027, 6, 16, 12, tzinfo=STOCKHOLM),
    timezone=STOCKHOLM,
    language="sv",
    location="Mälardalens universitet, Västerås",
    organiser=Organiser("Åsa Öberg", "asa@example.org"),
)
MAIL = Mail(
    index=0,
    name="invitation",
    due=NOW,
    expires=EVENT.starts,
    to=("all",),
    template="invitation",
    calendar=True,
)
ANNA = Recipient("anna@example.org", "Anna Ångström")
RENDERED = Rendered(
    subject="Inbjudan: Förlabb – skolnärvaro 16 juni",
    text="Hej Anna!\n",
    html="<p>Hej Anna!</p>",
    language="sv",
)
PDF = Attachment("slutrapport.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40)


def parse(raw: bytes):
    return message_from_bytes(raw, policy=policy.default)


def build(recipient: Recipient = ANNA, rendered: Rendered = RENDERED, **kwargs):
    return build_message(EVENT, MAIL, recipient, rendered, sender=SENDER, now=NOW, **kwargs)


def test_one_recipient_with_swedish_names_and_subject_round_trip():
    msg = parse(build())
    assert msg["To"].addresses[0].display_name == "Anna Ångström"
    assert [a.addr_spec for a in msg["To"].addresses] == ["anna@example.org"]
    assert msg["Cc"] is None and msg["Bcc"] is None
    assert msg["Subject"] == "Inbjudan: Förlabb – skolnärvaro 16 juni"
    assert str(msg["From"]) == "Samhällskontraktet <samhallskontraktet@example.org>"
    assert str(msg["Reply-To"]) == "Åsa Öberg <asa@example.org>"  # the organiser answers
    assert msg["Content-Language"] == "sv"
    # policy.SMTP writes CRLF line ends, as the wire wants them
    assert msg.get_body(("plain",)).get_content() == "Hej Anna!\r\n"
    assert msg.get_body(("html",)).get_content() == "<p>Hej Anna!</p>\r\n"
    assert (build()).isascii()  # 7-bit clean: every relay and client reads it


def test_out_of_office_replies_are_suppressed_for_exchange_and_everyone_else():
    msg = parse(build())
    assert msg["Auto-Submitted"] == "auto-generated"  # RFC 3834 autoresponders
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"  # Exchange and Outlook


LONG_NAME = "Samverkansgruppen för Länsmansgården och Västmanlands kommuner och regioner"


@pytest.mark.parametrize(
    "name",
    [
        LONG_NAME,
        "Västmanlands läns landstings förvaltningsenhet för samhällsbyggnad och miljö",
        "Samverkansgruppen for Lansmansgarden och Vastmanlands kommuner och regioner, Vasteras",
        "Anna Ångström",
    ],
)
def test_a_long_display_name_is_split_between_words_and_reads_back_exactly(name: str):
    """Python's address parser puts a space between adjacent encoded-words (CPython
    gh-128110), RFC 2047 readers drop it: a split inside a word reads as "Län smansgården"
    in one of them, whichever way it is written."""
    raw = build(Recipient("anna@example.org", name))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    (to,) = parse(raw)["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "anna@example.org")
    folded = message_from_bytes(raw, policy=policy.compat32)["To"]
    assert str(make_header(decode_header(folded))) == f"{name} <anna@example.org>"


def test_a_long_sender_and_organiser_name_read_back_exactly():
    organiser = Organiser(LONG_NAME, "asa@example.org")
    event = Event(**{**EVENT.__dict__, "organiser": organiser})
    sender = Sender("info@example.org", LONG_NAME + " i Västerås", None, "example.org")
    raw = build_message(event, MAIL, ANNA, RENDERED, sender=sender, now=NOW)
    msg = parse(raw)
    assert msg["From"].addresses[0].display_name == sender.name
    assert msg["Reply-To"].addresses[0].display_name == LONG_NAME


def test_message_id_is_stable_per_delivery_and_differs_between_them():
    first, again = parse(build()), parse(build())
    assert (
        first["Message-ID"]
        == again["Message-ID"]
        == message_id("forlabb", "invitation", "anna@example.org", domain="example.org")
    )
    other = parse(build(Recipient("bo@example.org", "Bo")))
    assert other["Message-ID"] != first["Message-ID"]


def test_attachments_arrive_byte_for_byte_with_their_type():
    msg = parse(build(attachments=[PDF]))
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "slutrapport.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == PDF.data


def test_the_calendar_file_is_a_valid_event_with_a_stable_uid_and_the_right_zone():
    ics = calendar_attachment(EVENT, domain="example.org", now=NOW)
    again = calendar_attachment(EVENT, domain="example.org", now=NOW + timedelta(days=3))
    (event,) = icalendar.Calendar.from_ical(ics.data).walk("VEVENT")
    (event_again,) = icalendar.Calendar.from_ical(again.data).walk("VEVENT")
    assert str(event["UID"]) == str(event_again["UID"]) == "forlabb@example.org"
    assert (
        event["DTSTART"].dt == EVENT.starts
        and event["DTSTART"].params["TZID"] == "Europe/Stockholm"
    )
    assert event["DTEND"].dt == EVENT.ends
    assert str(event["SUMMARY"]) == "Förlabb: Skolnärvaro"
    assert str(event["LOCATION"]) == "Mälardalens universitet, Västerås"
    assert str(event["ORGANIZER"]) == "mailto:asa@example.org"
    assert ics.mime_type == ("text", "calendar")


def test_every_calendar_reader_reads_nine_in_stockholm_in_june_as_summer_time():
    """vobject (and Outlook, Apple Calendar) take the offset from the file's VTIMEZONE, not
    from a zone database; vobject read only the first date of icalendar's RDATE lists."""
    ics = calendar_attachment(EVENT, domain="example.org", now=NOW).data
    (event,) = icalendar.Calendar.from_ical(ics).walk("VEVENT")
    assert event["DTSTART"].dt.isoformat() == "2027-06-16T09:00:00+02:00"
    other = vobject.readOne(ics.decode())
    assert other.vevent.dtstart.value.isoformat() == "2027-06-16T09:00:00+02:00"
    assert other.vevent.dtend.value.isoformat() == "2027-06-16T12:00:00+02:00"
    assert other.vtimezone.tzid.value == "Europe/Stockholm"
    winter = Event(
        **{
            **EVENT.__dict__,
            "starts": datetime(2027, 11, 2, 9, tzinfo=STOCKHOLM),
            "ends": datetime(2028, 7, 1, 9, tzinfo=STOCKHOLM),  # a long one: both offsets
        }
    )
    other = vobject.readOne(calendar_attachment(winter, domain="e.org", now=NOW).data.decode())
    assert other.vevent.dtstart.value.isoformat() == "2027-11-02T09:00:00+01:00"
    assert other.vevent.dtend.value.isoformat() == "2028-07-01T09:00:00+02:00"


def test_the_calendar_part_says_utf_8_so_a_mail_reader_decodes_swedish():
    event = Event(**{**EVENT.__dict__, "title": "Dialogmöte"})
    ics = calendar_attachment(event, domain="example.org", now=NOW)
    (part,) = list(parse(build(attachments=[ics])).iter_attachments())
    assert part.get_content_type() == "text/calendar"
    assert part.get_content_charset() == "utf-8"
    assert "SUMMARY:Dialogmöte\r\n" in part.get_content()


def read_both(ics: bytes) -> tuple[icalendar.Event, object]:
    """The VEVENT as icalendar reads it and as vobject does: two readers, one answer wanted."""
    (event,) = icalendar.Calendar.from_ical(ics).walk("VEVENT")
    return event, vobject.readOne(ics.decode()).vevent


@pytest.mark.parametrize(
    ("identity", "status"),
    [(Identity(3), "CONFIRMED"), (Identity(4, CANCEL, "", "x@example.org"), "CANCELLED")],
)
def test_a_calendar_file_carries_its_revision_method_and_one_attendee(identity, status):
    """SPEC §10: same UID, the SEQUENCE of the revision, METHOD in the file and on the MIME
    part (Outlook reads the part's), the organiser, and this message's recipient alone."""
    moved = Event(**{**EVENT.__dict__, "starts": datetime(2027, 10, 14, 13, tzinfo=STOCKHOLM)})
    moved = Event(**{**moved.__dict__, "ends": datetime(2027, 10, 14, 15, tzinfo=STOCKHOLM)})
    ics = calendar_attachment(
        moved, domain="example.org", now=NOW, identity=identity, attendee=ANNA
    )
    ours, theirs = read_both(ics.data)
    assert str(ours["UID"]) == theirs.uid.value == "forlabb@example.org"
    assert int(ours["SEQUENCE"]) == int(theirs.sequence.value) == identity.sequence
    assert str(ours["STATUS"]) == theirs.status.value == status
    # 13:00 in Stockholm in October is still summer time: both readers agree on the instant.
    assert ours["DTSTART"].dt == theirs.dtstart.value
    assert theirs.dtstart.value.isoformat() == "2027-10-14T13:00:00+02:00"
    assert str(ours["ATTENDEE"]) == "mailto:anna@example.org"
    assert theirs.attendee.value == "mailto:anna@example.org"
    assert theirs.organizer.value == "mailto:asa@example.org"  # the event's, before the sender's
    calendar = icalendar.Calendar.from_ical(ics.data)
    assert str(calendar["METHOD"]) == identity.method
    (part,) = list(parse(build(attachments=[ics])).iter_attachments())
    assert part.get_param("method") == identity.method


def test_thirteen_in_stockholm_in_late_october_reads_as_winter_time_in_both_readers():
    """The issue's example: after the last Sunday of October, +01:00, from the VTIMEZONE."""
    autumn = datetime(2027, 11, 1, 13, tzinfo=STOCKHOLM)
    event = Event(**{**EVENT.__dict__, "starts": autumn, "ends": autumn + timedelta(hours=2)})
    ours, theirs = read_both(calendar_attachment(event, domain="e.org", now=NOW).data)
    assert theirs.dtstart.value.isoformat() == "2027-11-01T13:00:00+01:00"
    assert ours["DTSTART"].dt == theirs.dtstart.value


@pytest.mark.parametrize(
    ("recipient", "rendered", "key"),
    [
        (Recipient("anna@example.org", "Anna\r\nBcc: eve@example.org"), RENDERED, "recipient name"),
        (ANNA, Rendered("Hej\nBcc: eve@example.org", "x", None, "sv"), "subject"),
    ],
)
def test_a_line_break_in_a_header_is_refused_never_sent(recipient, rendered, key):
    with pytest.raises(InputError) as caught:
        build(recipient, rendered)
    assert str(caught.value).startswith(
        f'schedules/forlabb/event.toml: mail[0] "invitation".{key}:'
    )


@pytest.mark.parametrize("html", ["<p>Hej Anna.\nVälkommen!</p>", None])
def test_parts_encoded_where_rendered_make_the_same_message(html: str | None):
    rendered = Rendered(RENDERED.subject, "Hej Anna.\r\n.Välkommen!\n", html, "sv")
    encoded = with_parts(rendered)
    assert encoded.parts is not None and (encoded.parts[1] is None) == (html is None)
    assert build(rendered=encoded, attachments=[PDF]) == build(rendered=rendered, attachments=[PDF])
