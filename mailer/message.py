"""Event + recipient + rendered parts -> one `EmailMessage` for one person, and its .ics (pure)."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from functools import cached_property

import icalendar

from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.recipients import CONTROL
from mailer.render import Rendered

PRODID = "-//mailer//mailer//EN"
# Headers stored with set_raw() go out as written: `_set_mailbox` has folded them already.
_ASCII = policy.SMTP.clone(refold_source="none")
_UTF8 = policy.SMTPUTF8.clone(refold_source="none")


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

    @cached_property
    def part(self) -> MIMEPart:
        """The MIME part, base64 done once: every recipient's message carries the same part,
        so a 200 KB report costs one encoding per mail, not one per recipient (~8 ms each)."""
        part = MIMEPart(policy=policy.SMTP)
        maintype, subtype = self.mime_type
        part.set_content(
            self.data,
            maintype=maintype,
            subtype=subtype,
            disposition="attachment",
            filename=self.filename,
        )
        return part


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
    # An address with non-ASCII goes out with SMTPUTF8 (the transport insists on it), so its
    # headers may be UTF-8 (RFC 6532); under policy.SMTP it would become an invalid encoded-word.
    is_ascii = (sender.address + recipient.address).isascii()
    msg = EmailMessage(policy=_ASCII if is_ascii else _UTF8)
    msg["Subject"] = rendered.subject
    _set_mailbox(msg, "From", sender.name, sender.address)
    _set_mailbox(msg, "To", recipient.name, recipient.address)
    if event.organiser:
        _set_mailbox(msg, "Reply-To", event.organiser.name, event.organiser.email)
    elif sender.reply_to:
        msg["Reply-To"] = sender.reply_to
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = message_id(
        event.id, mail.name, recipient.key, domain=sender.message_id_domain
    )
    # Out-of-office replies to a mailing are noise; people can still answer by hand.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text, cte="quoted-printable")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    if attachments:
        msg.make_mixed()
        for attachment in attachments:
            msg.attach(attachment.part)
    msg["Content-Language"] = rendered.language  # after the parts: set_content clears Content-*
    return msg


def _set_mailbox(msg: EmailMessage, header: str, name: str, address: str) -> None:
    """`Name <address>`, safely folded when it does not fit on one line.

    Python 3.11 folds a long display name without its quotes: `"Andersson, Anna …"` goes out
    as `Andersson,⏎ Anna … <a@b>`, which reads as two addresses (and a `:` as a group); and it
    writes a name holding `=?` as it is, for mail clients to decode. Such a name is written as
    RFC 2047 encoded-words, folded here, and stored as it is (see `_ASCII`).
    The address is built from its parts: `Address(addr_spec=…)` raises on `ännä@…`.
    """
    username, _, domain = address.rpartition("@")
    mailbox = Address(display_name=name, username=username, domain=domain)
    fits = len(f"{header}: {mailbox}") <= (_ASCII.max_line_length or 78)
    if not name or (fits and "=?" not in name):
        msg[header] = mailbox
    else:
        words = Header(name, "utf-8", header_name=header).encode(linesep="\r\n")
        msg.set_raw(header, f"{words}\r\n <{address}>")


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
