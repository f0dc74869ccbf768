"""Messages parsed back as a mail client would: one recipient, Swedish intact, stable IDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest

from mailer.errors import InputError
from mailer.events import Event, Mail, Organiser, Recipient
from mailer.message import Attachment, Sender, build_message, calendar_attachment, message_id
from mailer.render import Rendered

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
