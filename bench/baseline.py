"""The baselines, over the same number of connections to the same sink as the service.

- bare loop: what a person writes without the service: per recipient an `EmailMessage`
  (policy.SMTP) with the same headers, text, HTML (and PDF) the service sends, handed to
  aiosmtplib's `send_message`. No templates, no database, no log.
- transport only: one message's bytes built beforehand, sent again and again with the
  service's own MAIL, RCPT, DATA (`transports.smtp.transact`). The ceiling of client +
  sink; if it is far above the other rows, the sink is not what limits them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import TypeVar

import aiosmtplib

from bench.project import SENDER
from mailer.clock import SystemClock
from mailer.config import load_settings
from mailer.outbox import Outbox
from mailer.sources import defaults_for, find_event_files, load_event
from mailer.transports.smtp import transact

LOCAL_HOSTNAME = "bench"  # an explicit name: no FQDN lookup per client
T = TypeVar("T")


@dataclass(frozen=True)
class Content:
    """What the service sends for a mail, rendered once: the bare loop reuses it as it is."""

    subject: str
    text: str
    html: str | None
    attachment: tuple[str, bytes] | None
    prebuilt: bytes  # the service's own message for the first recipient, flattened


def service_content(root: Path) -> Content:
    """Render the project's (only) event's mail for its first recipient with the service."""
    settings = load_settings(root / "config.toml")
    (source,) = find_event_files(settings.paths.schedules)
    event = load_event(source, defaults=defaults_for(settings)).event
    assert event is not None
    mail = event.mails[0]
    recipient = event.recipients_of(mail)[0]
    outbox = Outbox.from_settings(settings)
    rendered = outbox.renderer.render_mail(event, mail, recipient)
    files = outbox.attachments(event, mail, now=SystemClock().now())
    attachment = (files[0].filename, files[0].data) if files else None
    message = outbox.compose(event, mail, recipient, now=SystemClock().now())
    return Content(rendered.subject, rendered.text, rendered.html, attachment, bytes(message))


def bare_message(content: Content, address: str, name: str, number: int) -> EmailMessage:
    """One recipient's message, built the way the email package's documentation shows."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["Subject"] = content.subject
    msg["From"] = Address(display_name="Samhällskontraktet", addr_spec=SENDER)
    msg["To"] = Address(display_name=name, addr_spec=address)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<bench-{number}@example.org>"
    msg.set_content(content.text, cte="quoted-printable")
    if content.html is not None:
        msg.add_alternative(content.html, subtype="html", cte="quoted-printable")
    if content.attachment is not None:
        filename, data = content.attachment
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    return msg


async def over_connections(
    port: int,
    items: Sequence[T],
    send: Callable[[aiosmtplib.SMTP, T], Awaitable[object]],
    *,
    connections: int,
) -> float:
    """Seconds to send every item over `connections` sessions (connecting included, as the
    service connects inside its own timing), each session taking the next item."""
    queue = deque(items)
    started = time.perf_counter()
    clients = [
        aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, local_hostname=LOCAL_HOSTNAME, start_tls=False
        )
        for _ in range(connections)
    ]
    await asyncio.gather(*(client.connect() for client in clients))

    async def session(client: aiosmtplib.SMTP) -> None:
        while queue:
            await send(client, queue.popleft())

    await asyncio.gather(*(session(client) for client in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(client.quit() for client in clients))
    return elapsed


async def bare_loop(
    port: int, recipients: Sequence[tuple[str, str]], content: Content, *, connections: int
) -> float:
    numbered = list(enumerate(recipients))

    async def send(client: aiosmtplib.SMTP, item: tuple[int, tuple[str, str]]) -> None:
        number, (address, name) = item
        await client.send_message(bare_message(content, address, name, number))

    return await over_connections(port, numbered, send, connections=connections)


async def transport_only(
    port: int, recipients: Sequence[tuple[str, str]], content: Content, *, connections: int
) -> float:
    async def send(client: aiosmtplib.SMTP, item: tuple[str, str]) -> None:
        await transact(client, content.prebuilt, sender=SENDER, recipient=item[0], options=[])

    return await over_connections(port, recipients, send, connections=connections)
