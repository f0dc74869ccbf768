"""Event + recipient + rendered parts -> the bytes of one message for one person; .ics (pure)."""

from __future__ import annotations

import binascii
import functools
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.charset import Charset
from email.header import Header
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, formataddr
from functools import cached_property

import icalendar

from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.recipients import CONTROL
from mailer.render import Rendered

PRODID = "-//mailer//mailer//EN"
CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322's recommended line length; the hard limit is 998
_UTF8 = Charset("utf-8")
# Folding happens at spaces only: a run without one that cannot fit a line after `Subject: `
# goes as encoded-words instead, which may be split anywhere (a 1,000-character word made a
# 1,004-octet line, and servers answer `500 Line too long` past RFC 5322's 998).
_UNFOLDABLE = re.compile(rf"\S{{{MAX_LINE - len('Subject: ')},}}")
# Any line end a template or a text left: a lone CR or LF becomes CRLF on the wire.
_LINE_END = re.compile(r"\r\n?|\n")


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
    def part(self) -> bytes:
        """The MIME part, encoded and flattened once: every recipient's message carries the
        same bytes, so a 200 KB report costs one encoding per mail, not ~9 ms per recipient."""
        part = MIMEPart(policy=policy.SMTP)
        maintype, subtype = self.mime_type
        part.set_content(
            self.data,
            maintype=maintype,
            subtype=subtype,
            disposition="attachment",
            filename=self.filename,
        )
        return part.as_bytes(policy=policy.SMTP).rstrip(b"\r\n")


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
) -> bytes:
    """One message to one person, as the bytes that go on the wire (CRLF line ends).

    To holds that recipient alone; text (and HTML) as quoted-printable UTF-8; attachments
    as parts flattened once per mail. Written directly rather than through `EmailMessage`,
    whose header objects cost ~3 ms a message (a class built per header, a parse tree per
    fold): three times what sending it costs. `tests/test_message.py` parses every shape
    back with the `email` package.
    """
    for value, key in ((rendered.subject, "subject"), (recipient.name, "recipient name")):
        if CONTROL.search(value):
            raise InputError(
                f"line breaks are not allowed in a header, got {value!r}",
                source=event.source,
                key=f"{mail.key}.{key}",
            )
    mid = message_id(event.id, mail.name, recipient.key, domain=sender.message_id_domain)
    headers = [
        _unstructured("Subject", rendered.subject),
        _mailbox("From", sender.name, sender.address),
        _mailbox("To", recipient.name, recipient.address),
    ]
    if event.organiser:
        headers.append(_mailbox("Reply-To", event.organiser.name, event.organiser.email))
    elif sender.reply_to:
        headers.append(f"Reply-To: {sender.reply_to}")
    headers += [
        f"Date: {format_datetime(now.astimezone(UTC))}",
        f"Message-ID: {mid}",
        # Out-of-office replies to a mailing are noise; people can still answer by hand.
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f"Content-Language: {rendered.language}",
    ]
    # "=_" never occurs in quoted-printable or base64 text, so no body can hold a boundary.
    boundary = f"=_{mid[1:17]}"
    body = _text_part(rendered.text, "plain")
    if rendered.html is not None:
        body = _multipart("alternative", boundary + "a", [body, _text_part(rendered.html, "html")])
    if attachments:
        body = _multipart("mixed", boundary + "m", [body, *(a.part for a in attachments)])
    return ("\r\n".join(headers) + "\r\n").encode() + body


def _text_part(text: str, subtype: str) -> bytes:
    crlf = (_LINE_END.sub("\r\n", text) if "\r" in text else text.replace("\n", "\r\n")).encode()
    if not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + binascii.b2a_qp(crlf, istext=True)


def _multipart(subtype: str, boundary: str, parts: Sequence[bytes]) -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    between = f"\r\n--{boundary}\r\n".encode()
    return head + between[2:] + between.join(parts) + f"\r\n--{boundary}--\r\n".encode()


def _unstructured(header: str, value: str) -> str:
    """`Header: value`, as RFC 2047 encoded-words when it is not plain ASCII, folded."""
    if value.isascii() and "=?" not in value and len(header) + 2 + len(value) <= MAX_LINE:
        return f"{header}: {value}"
    plain = value.isascii() and "=?" not in value and not _UNFOLDABLE.search(value)
    charset = "us-ascii" if plain else "utf-8"
    return f"{header}: {_folded(header, value, charset)}"


@functools.lru_cache(maxsize=1024)
def _mailbox(header: str, name: str, address: str) -> str:
    """`Name <address>`: quoted as needed on one line, or encoded-words folded by us. Kept:
    From and Reply-To are the same in every message (~5 µs each for a non-ASCII name).

    A long display name is never left to a generic folder: Python 3.11's folds
    `"Andersson, Anna …"` without its quotes, which reads as two addresses (and a `:` as a
    group). A name holding `=?` is encoded too, so no client decodes it as an encoded-word.
    """
    if not name:
        return f"{header}: {address}"
    if (name + address).isascii() and "=?" not in name:  # formataddr refuses non-ASCII
        one_line = f"{header}: {formataddr((name, address))}"
        if len(one_line) <= MAX_LINE:
            return one_line
    words = _UTF8.header_encode(name)  # one encoded-word: enough for most names
    if len(header) + 2 + len(words) > MAX_LINE:
        words = _folded(header, name, "utf-8")
    one_line = f"{header}: {words} <{address}>"
    if CRLF not in words and len(one_line) <= MAX_LINE:
        return one_line
    return f"{header}: {words}{CRLF} <{address}>"


@functools.lru_cache(maxsize=1024)
def _folded(header: str, value: str, charset: str) -> str:
    """`value` encoded (as needed) and folded by email.header: ~0.3 ms a time, so kept for
    the subjects and senders that every recipient of a mail shares."""
    return Header(value, charset, header_name=header).encode(linesep=CRLF)


def parse_message(raw: bytes) -> EmailMessage:
    """The message as the `email` package reads it: for `preview` and for tests."""
    message = message_from_bytes(raw, policy=policy.SMTP)
    assert isinstance(message, EmailMessage)
    return message


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
