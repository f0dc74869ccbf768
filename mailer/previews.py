"""`mailer preview`: the messages chosen recipients would get, written as .eml and .html
files with names that stay in their folder.

Split from `outbox.py`, which composes the messages: choosing whom to show, finding the
event by id and naming the files are `preview`'s own concerns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import datetime
from pathlib import Path

from mailer.config import Settings
from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.message import parse_message
from mailer.outbox import Outbox
from mailer.render import Renderer
from mailer.sources import load_events


def write_previews(
    settings: Settings,
    event_id: str,
    mail_name: str,
    *,
    address: str | None,
    out_dir: Path,
    now: datetime,
    language: str | None = None,
) -> list[Path]:
    """Write what `address` (else the first recipient of each language) would get: `preview`.
    With `language`, what that person (else the mail's first recipient) would get in it."""
    event = find_event(settings, event_id)
    mail = next((m for m in event.mails if m.name == mail_name), None)
    if mail is None:
        known = ", ".join(m.name for m in event.mails)
        raise InputError(f'no mail "{mail_name}" (known: {known})', source=event.source)
    outbox = Outbox.from_settings(settings)
    try:
        chosen = _preview_recipients(event, mail, address, outbox.renderer, language)
        return _write(outbox, event, mail, chosen, out_dir=out_dir, now=now)
    finally:
        outbox.close()


def _write(
    outbox: Outbox,
    event: Event,
    mail: Mail,
    recipients: list[Recipient],
    *,
    out_dir: Path,
    now: datetime,
) -> list[Path]:
    folder = out_dir / event.id / mail.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for recipient in recipients:
        raw = outbox.compose(event, mail, recipient, now=now)
        eml = folder / f"{file_name_of(recipient.key)}.eml"
        eml.write_bytes(raw)
        written.append(eml)
        html = parse_message(raw).get_body(("html",))
        if html is not None:
            written.append(folder / f"{file_name_of(recipient.key)}.html")
            written[-1].write_text(html.get_content(), encoding="utf-8")
    return written


def find_event(settings: Settings, event_id: str) -> Event:
    """The valid event with this id, or an error that says what exists or what is wrong."""
    loaded = load_events(settings)
    match = next((item for item in loaded if item.id == event_id), None)
    if match is None:
        known = ", ".join(item.id for item in loaded) or "none"
        raise InputError(f'no event "{event_id}" (known: {known})', source=settings.paths.schedules)
    if match.error is not None:
        raise match.error
    assert match.event is not None
    return match.event


def _preview_recipients(
    event: Event, mail: Mail, address: str | None, renderer: Renderer, language: str | None
) -> list[Recipient]:
    recipients = event.recipients_of(mail)
    if language is not None:
        # A mail to a group of Swedes, shown in English: a sample person, told to read it.
        problem = renderer.language_error(language, source=renderer.templates_dir, key="--language")
        if problem is not None:
            raise problem
        sample = _preview_recipients(event, mail, address, renderer, None)[:1]
        return [dataclasses.replace(r, language=language) for r in sample]
    if address is not None:
        chosen = [r for r in recipients if r.key == address.lower()]
        if not chosen:
            raise InputError(
                f"{address} does not get this mail (not in {', '.join(mail.to)})",
                source=event.source,
                key=mail.key,
            )
        return chosen
    first_per_language: dict[str, Recipient] = {}
    # Nobody gets it yet (the follow-up lab before the event): show it for a sample person.
    for recipient in recipients or event.recipients[:1]:
        first_per_language.setdefault(renderer.language_for(event, mail, recipient), recipient)
    return list(first_per_language.values())


# Kept out of a preview's file name: a path separator (`a/b@example.org` is a valid address),
# `%` (so the escaping below stays one-to-one), controls, and a leading dot (a hidden file).
_UNSAFE_IN_NAME = re.compile(r"[/\\%\x00-\x1f\x7f-\x9f]|^\.")
# Most file systems allow 255 bytes per name; room is left for ".html".
MAX_NAME_BYTES = 200


def file_name_of(address: str) -> str:
    """A file name for `address` that stays in its folder and belongs to no other address:
    unsafe characters percent-escaped (`a%2Fb@example.org`), a long one cut and made
    unique by a hash of the whole address."""
    name = _UNSAFE_IN_NAME.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), address)
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(address.encode()).hexdigest()[:16]
    return f"{name.encode()[: MAX_NAME_BYTES - 17].decode(errors='ignore')}-{digest}"
