"""Event + recipient + rendered parts -> the bytes of one message for one person (pure).

Header lines are written in headers.py, the calendar file in ics.py.
"""

from __future__ import annotations

import binascii
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from functools import cached_property

from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.headers import mailbox, unstructured
from mailer.recipients import CONTROL
from mailer.render import Rendered
from mailer.text_parts import parts_of

# A file name that needs no encoding in a MIME parameter (a calendar file's `<event-id>.ics`).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]{1,60}$")


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
    charset: str | None = None  # of a text file, so a mail reader decodes it as written
    method: str | None = None  # of a calendar file: Outlook takes an invitation by it

    @property
    def mime_type(self) -> tuple[str, str]:
        guessed, _ = mimetypes.guess_type(self.filename)
        maintype, _, subtype = (guessed or "application/octet-stream").partition("/")
        return maintype, subtype

    @cached_property
    def part(self) -> bytes:
        """The MIME part, encoded and flattened once: every recipient's message carries the
        same bytes, so a 200 KB report costs one encoding per mail, not ~9 ms per recipient."""
        if self.method is not None and _PLAIN_NAME.match(self.filename):
            return self._calendar_part()
        part = MIMEPart(policy=policy.SMTP)
        maintype, subtype = self.mime_type
        part.set_content(
            self.data,
            maintype=maintype,
            subtype=subtype,
            disposition="attachment",
            filename=self.filename,
            params=self._params or None,
        )
        return part.as_bytes(policy=policy.SMTP).rstrip(b"\r\n")

    def _calendar_part(self) -> bytes:
        """A calendar file's part written directly: it differs per recipient (its ATTENDEE,
        SPEC §10), and `MIMEPart` took ~420 µs of it per message, this ~15 µs. Its name is
        `<event-id>.ics`, plain ASCII: no parameter needs encoding."""
        maintype, subtype = self.mime_type
        params = "".join(f'; {name}="{value}"' for name, value in self._params.items())
        body = binascii.b2a_base64(self.data, newline=False)
        lines = b"\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))
        return (
            f"Content-Type: {maintype}/{subtype}{params}\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="{self.filename}"\r\n\r\n'
        ).encode() + lines

    @property
    def _params(self) -> dict[str, str]:
        params = {"charset": self.charset} if self.charset else {}
        return params | ({"method": self.method} if self.method else {})


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
    mid: str | None = None,
) -> bytes:
    """One message to one person, as the bytes that go on the wire (CRLF line ends).
    `mid`: the delivery's stored Message-ID (a notice's names its round), else the mail's.

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
    # `mid`: a Message-ID of the caller's (a test mail must not pass for the real delivery).
    mid = mid or message_id(event.id, mail.name, recipient.key, domain=sender.message_id_domain)
    headers = _headers(event, recipient, rendered, sender=sender, mid=mid, now=now)
    # "=_" never occurs in quoted-printable or base64 text, so no body can hold a boundary.
    boundary = f"=_{mid[1:17]}"
    body, html = rendered.parts or parts_of(rendered)
    if html is not None:
        body = _multipart("alternative", boundary + "a", [body, html])
    if attachments:
        body = _multipart("mixed", boundary + "m", [body, *(a.part for a in attachments)])
    return ("\r\n".join(headers) + "\r\n").encode() + body


def _headers(
    event: Event,
    recipient: Recipient,
    rendered: Rendered,
    *,
    sender: Sender,
    mid: str,
    now: datetime,
) -> list[str]:
    """The message's header lines, in the order they are written."""
    headers = [
        unstructured("Subject", rendered.subject),
        mailbox("From", sender.name, sender.address),
        mailbox("To", recipient.name, recipient.address),
    ]
    if event.organiser:
        headers.append(mailbox("Reply-To", event.organiser.name, event.organiser.email))
    elif sender.reply_to:
        headers.append(f"Reply-To: {sender.reply_to}")
    return [
        *headers,
        f"Date: {format_datetime(now.astimezone(UTC))}",
        f"Message-ID: {mid}",
        # Out-of-office replies to a mailing are noise; people can still answer by hand.
        "Auto-Submitted: auto-generated",
        # Exchange ignores Auto-Submitted: no out-of-office or automatic reply from Outlook.
        "X-Auto-Response-Suppress: OOF, AutoReply",
        "MIME-Version: 1.0",
        f"Content-Language: {rendered.language}",
    ]


def _multipart(subtype: str, boundary: str, parts: Sequence[bytes]) -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    between = f"\r\n--{boundary}\r\n".encode()
    return head + between[2:] + between.join(parts) + f"\r\n--{boundary}--\r\n".encode()


def parse_message(raw: bytes) -> EmailMessage:
    """The message as the `email` package reads it: for `preview` and for tests."""
    message = message_from_bytes(raw, policy=policy.SMTP)
    assert isinstance(message, EmailMessage)
    return message
