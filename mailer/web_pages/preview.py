"""A mail as one recipient gets it, taken apart for the preview page: the HTML part (for a
sandboxed iframe), the text part, the headers and the attachments with their sizes.

Composed by the service's own outbox, the path `mailer preview` and sending take, so what
the page shows is what goes out; nothing is written or recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from mailer.events import Event, Mail, Recipient
from mailer.message import parse_message
from mailer.outbox import Outbox

# Headers that say how the message is packed, not what a reader sees.
_PACKING = ("mime-version", "content-type", "content-transfer-encoding")


@dataclass(frozen=True)
class Part:
    name: str
    content_type: str
    size_bytes: int


@dataclass(frozen=True)
class Preview:
    html: str | None
    text: str | None
    headers: list[tuple[str, str]]
    attachments: list[Part]


def candidates(event: Event, mail: Mail) -> tuple[Recipient, ...]:
    """Whom the mail can be previewed for: its recipients, or (nobody gets it yet, as a
    follow-up before the event) the event's first person as a sample, as `mailer preview`."""
    return event.recipients_of(mail) or event.recipients[:1]


async def preview_for(
    outbox: Outbox, event: Event, mail: Mail, recipient: Recipient, *, now: datetime
) -> Preview:
    """Compose the message for `recipient` and take it apart; raises MailerError as sending
    would (a template that fails for this person)."""
    raw = await outbox.compose_async(event, mail, recipient, now=now)
    return dissect(parse_message(raw))


def dissect(message: EmailMessage) -> Preview:
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    # An EmailPolicy gives headers decoded ("Förlabb", not "=?utf-8?q?F=C3=B6rlabb?=").
    headers = [(n, str(v)) for n, v in message.items() if n.lower() not in _PACKING]
    attachments = [
        Part(
            part.get_filename() or "",
            part.get_content_type(),
            len(part.get_payload(decode=True) or b""),
        )
        for part in message.iter_attachments()
        if isinstance(part, EmailMessage)
    ]
    return Preview(
        html=str(html.get_content()) if isinstance(html, EmailMessage) else None,
        text=str(text.get_content()) if isinstance(text, EmailMessage) else None,
        headers=headers,
        attachments=attachments,
    )
