"""Event + recipient + rendered parts -> the bytes of one message for one person; .ics (pure)."""

from __future__ import annotations

import binascii
import functools
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy, quoprimime
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
# A word that stands in a display name as itself (RFC 5322 atext); `=?` would be decoded.
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_ENCODED_WORD = 75  # RFC 2047's longest encoded-word
# How far around an event its .ics describes the zone's offsets: readers need the offset at
# DTSTART and DTEND only; a year either side is slack for readers that look around them.
_ZONE_MARGIN = timedelta(days=366)


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
            params={"charset": self.charset} if self.charset else None,
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
        # Exchange ignores Auto-Submitted: no out-of-office or automatic reply from Outlook.
        "X-Auto-Response-Suppress: OOF, AutoReply",
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
        words = _phrase(header, name)
    one_line = f"{header}: {words} <{address}>"
    if len(one_line.rsplit(CRLF, 1)[-1]) <= MAX_LINE:  # the address fits on the last line
        return one_line
    return f"{header}: {words}{CRLF} <{address}>"


def _phrase(header: str, name: str) -> str:
    """A display name too long for one encoded-word, folded after `Header: ` and split only
    between words: plain words stay as they are, the others become encoded-words.

    Where an encoded-word meets a plain word, every reader keeps the space between them. Two
    adjacent encoded-words are read differently: RFC 2047 readers (Outlook, Thunderbird)
    drop the space between them, Python's address parser keeps one (CPython gh-128110); so
    a name split inside a word read as "Län smansgården" there. The space between words goes
    inside an encoded-word, so a run of non-ASCII words too long for one reads exactly in
    RFC 2047 readers and with a doubled space in Python's; a single word longer than an
    encoded-word is split in it, and Python's parser shows a space there.
    """
    room = min(_ENCODED_WORD, MAX_LINE - len(header) - 2)
    words = name.split(" ")
    # An empty word is a doubled space, which only an encoded-word keeps: so are its neighbours.
    plain = [
        _ATOM.fullmatch(word) is not None
        and "=?" not in word
        and len(word) <= room
        and "" not in words[max(i - 1, 0) : i + 2]
        for i, word in enumerate(words)
    ]
    chunks: list[str] = []
    run: list[str] = []
    for word, is_plain in zip([*words, ""], [*plain, True], strict=True):
        if not is_plain:
            run.append(word)
            continue
        if run:
            chunks += _encoded_words(run, room)
            run = []
        if word:
            chunks.append(word)
    lines = [f"{header}:"]
    for chunk in chunks:
        if len(lines[-1]) + 1 + len(chunk) > MAX_LINE:
            lines.append("")
        lines[-1] += f" {chunk}"
    return CRLF.join(lines)[len(header) + 2 :]


def _encoded_words(words: list[str], room: int) -> list[str]:
    """`words` joined by spaces as encoded-words of at most `room` characters, each ending
    after a space; a word too long for one is split between its characters."""
    texts = [f"{word} " for word in words[:-1]] + [words[-1]]
    pieces = [""]
    for text in texts:
        for unit in [text] if _encoded_length(text) <= room else text:
            if _encoded_length(pieces[-1] + unit) > room:
                pieces.append("")
            pieces[-1] += unit
    return [_UTF8.header_encode(piece) for piece in pieces if piece]


def _encoded_length(text: str) -> int:
    """Characters in the encoded-word `header_encode` writes for `text`: `=?utf-8?b?...?=`
    or `=?utf-8?q?...?=`, whichever is shorter."""
    octets = text.encode()
    return 12 + min(4 * -(-len(octets) // 3), quoprimime.header_length(octets))


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
