"""Event + recipient + rendered parts -> one `EmailMessage` for one person, and its .ics (pure)."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import icalendar

from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.recipients import CONTROL
from mailer.render import Rendered

PRODID = "-//mailer//mailer//EN"


@dataclass(frozen=True)
class Sender:
    """Who the mail is from, as the configuration says; an event's organiser becomes Reply-To."""

    address: str
    name: str = ""
    reply_to: str | None = None
    message_id_domain: str = "localhost"


@dataclass(frozen=True)
class Attachment:
    """A file's bytes, read once per mail and shared by every recipient's message."""

    filename: str
    data: bytes

    @property
    def mime_type(self) -> tuple[str, str]:
        guessed, _ = mimetypes.guess_type(self.filename)
        maintype, _, subtype = (guessed or "application/octet-stream").partition("/")
        return maintype, subtype


def message_id(event_id: str, mail_name: str, recipient_key: str, *, domain: str) -> str:
    """The same (event, mail, recipient) always gets the same Message-ID, on every try.

    So a message sent twice after a crash is recognisable as one message by mail clients.
    """
    digest = hashlib.sha256(f"{event_id}\0{mail_name}\0{recipient_key}".encode()).hexdigest()
    return f"<{digest[:32]}@{domain}>"


def build_message(
    event: Event,
    mail: Mail,
    recipient: Recipient,
    rendered: Rendered,
    *,
    sender: Sender,
    attachments: Sequence[Attachment] = (),
    now: datetime,
) -> EmailMessage:
    """One message to one person: To holds that recipient alone; text, HTML, attachments."""
    for value, key in ((rendered.subject, "subject"), (recipient.name, "recipient name")):
        if CONTROL.search(value):
            raise InputError(
                f"line breaks are not allowed in a header, got {value!r}",
                source=event.source,
                key=f"{mail.key}.{key}",
            )
    msg = EmailMessage(policy=policy.SMTP)
    msg["Subject"] = rendered.subject
    msg["From"] = Address(display_name=sender.name, addr_spec=sender.address)
    msg["To"] = Address(display_name=recipient.name, addr_spec=recipient.address)
    reply_to = _reply_to(event, sender)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = message_id(
        event.id, mail.name, recipient.key, domain=sender.message_id_domain
    )
    # Out-of-office replies to a mailing are noise; people can still answer by hand.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text, cte="quoted-printable")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    for attachment in attachments:
        maintype, subtype = attachment.mime_type
        msg.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    msg["Content-Language"] = rendered.language  # after the parts: set_content clears Content-*
    return msg


def _reply_to(event: Event, sender: Sender) -> Address | str | None:
    if event.organiser:
        return Address(display_name=event.organiser.name, addr_spec=event.organiser.email)
    return sender.reply_to


def calendar_attachment(event: Event, *, domain: str, now: datetime) -> Attachment:
    """An RFC 5545 VEVENT whose UID is stable per event, so an edit updates the calendar entry."""
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
    cal.add_missing_timezones()
    return Attachment(f"{event.id}.ics", cal.to_ical())
