"""What goes out: each delivery's message composed from event, templates and sender.

The engine, `check` and `preview` all compose through here, so what `check` accepted is
exactly what is sent. Attachments are read once per mail, not once per recipient: for the
service, as the version in force keeps them in the database (`use_files`), never the folder
as it is now; for `check` and `preview`, from the folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mailer.advice import day_off_notes, untranslated_notes
from mailer.config import Settings
from mailer.errors import InputError, MailerError, Problems
from mailer.events import Event, EventDefaults, Mail, Recipient
from mailer.ics import calendar_attachment
from mailer.message import Attachment, Sender, build_message, parse_message
from mailer.render import Rendered, Renderer
from mailer.rendering import RenderPool
from mailer.sources import (
    MAX_ATTACHMENT_BYTES,
    Loaded,
    attachment_name,
    defaults_for,
    load_event,
    load_events,
    read_bytes,
)

# `check` reports this many failing recipients per mail, then a count: a template that
# fails for one fails for all, and 200 identical lines hide the other problems.
MAX_PROBLEMS_PER_MAIL = 3


class Outbox:
    """Composes messages; holds the renderer and a per-mail cache of attachment bytes."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbox:
        sender = settings.sender
        return cls(
            Renderer(settings.paths.templates, default_language=sender.language),
            Sender(
                address=sender.from_,
                name=sender.from_name or "",
                reply_to=sender.reply_to,
                message_id_domain=sender.message_id_domain,
            ),
            renderers=settings.sending.connections,
        )

    def __init__(self, renderer: Renderer, sender: Sender, *, renderers: int = 1) -> None:
        self.renderer = renderer  # in this process: languages, template checks (no rendering)
        self.sender = sender
        # Rendering runs organisers' code: in workers, under a deadline (rendering.py). As
        # many as there are connections, so one runaway template holds up only its own.
        self.pool = RenderPool(
            renderer.templates_dir, default_language=renderer.default_language, size=renderers
        )
        self._files: dict[tuple[str, str], tuple[Attachment, ...]] = {}
        self._ics: dict[tuple[str, str, str], tuple[Attachment, ...]] = {}  # files + .ics
        self._stored: dict[str, dict[str, bytes]] = {}  # event -> its files as checked

    async def compose_async(
        self, event: Event, mail: Mail, recipient: Recipient, *, now: datetime
    ) -> bytes:
        """`compose` for the service: the event loop goes on while a worker renders."""
        rendered = await self.pool.render(event, mail, recipient)
        return self._build(event, mail, recipient, rendered, now=now)

    def compose(self, event: Event, mail: Mail, recipient: Recipient, *, now: datetime) -> bytes:
        """The message `recipient` gets for `mail`; raises MailerError if it cannot be made.
        Blocks while a worker renders, at most its deadline (`check`, `preview`)."""
        rendered = self.pool.render_now(event, mail, recipient)
        return self._build(event, mail, recipient, rendered, now=now)

    def close(self) -> None:
        """End the rendering workers."""
        self.pool.close()

    def _build(
        self, event: Event, mail: Mail, recipient: Recipient, rendered: Rendered, *, now: datetime
    ) -> bytes:
        return build_message(
            event,
            mail,
            recipient,
            rendered,
            sender=self.sender_for(event),
            attachments=self.attachments(event, mail, now=now, language=rendered.language),
            now=now,
        )

    def sender_for(self, event: Event) -> Sender:
        """`sender.from`, with the event's `from_name` as its display name if it has one."""
        return dataclasses.replace(self.sender, name=event.from_name or self.sender.name)

    def attachments(
        self, event: Event, mail: Mail, *, now: datetime, language: str = ""
    ) -> tuple[Attachment, ...]:
        """The mail's files, read once and shared by every recipient's message, and its .ics
        in `language` (made once per language: its [text.<lang>] may differ)."""
        key = (event.id, mail.name)
        if key not in self._files:
            self._files[key] = tuple(
                Attachment(path.name, self._bytes_of(event, mail, path)) for path in mail.attach
            )
        if not mail.calendar:
            return self._files[key]
        with_ics = (event.id, mail.name, language)
        if with_ics not in self._ics:
            shown, domain = event.in_language(language), self.sender.message_id_domain
            ics = calendar_attachment(shown, domain=domain, now=now)
            self._ics[with_ics] = (*self._files[key], ics)
        return self._ics[with_ics]

    def _bytes_of(self, event: Event, mail: Mail, path: Path) -> bytes:
        """As stored with the version in force; else from the folder (`check`, `preview`,
        and a version stored before its attachments were)."""
        stored = self._stored.get(event.id, {}).get(attachment_name(event, path))
        if stored is not None:
            return stored
        return read_bytes(
            path,
            root=event.folder,
            source=event.source,
            key=f"{mail.key}.attach",
            limit=MAX_ATTACHMENT_BYTES,
        )

    def use_files(self, event_id: str, files: dict[str, bytes]) -> None:
        """Compose that event's mails with these attachments: its version in force's, as
        they were checked and stored (SPEC §9), whatever the folder holds now."""
        self.forget(event_id)
        if files:
            self._stored[event_id] = files

    def forget(self, event_id: str) -> None:
        """Drop the files of an event that changed or is no longer held."""
        self._files = {k: v for k, v in self._files.items() if k[0] != event_id}
        self._ics = {k: v for k, v in self._ics.items() if k[0] != event_id}
        self._stored.pop(event_id, None)

    def check(self, event: Event, *, now: datetime) -> list[MailerError]:
        """Compose every mail for every recipient; the problems, at most a few per mail."""
        problems: list[MailerError] = []
        for mail in event.mails:
            found: list[MailerError] = list(self.renderer.check_mail(event, mail))
            if not found:
                found = self._check_recipients(event, mail, now=now)
            problems += found
        return problems

    def _check_recipients(self, event: Event, mail: Mail, *, now: datetime) -> list[MailerError]:
        found: list[MailerError] = []
        failed = 0
        # A mail nobody gets yet (to `attended`, before the event) is still rendered, for the
        # event's first recipient, so its template is known to work when people join.
        for recipient in event.recipients_of(mail) or event.recipients[:1]:
            try:
                self.compose(event, mail, recipient, now=now)
            except MailerError as exc:
                failed += 1
                if len(found) < MAX_PROBLEMS_PER_MAIL:
                    found.append(exc)
        if failed > len(found):
            found.append(
                InputError(
                    f"… and {failed - len(found)} more recipients fail the same way",
                    source=event.source,
                    key=mail.key,
                )
            )
        return found


def check_events(
    settings: Settings, sources: list[Path], *, now: datetime
) -> Iterator[tuple[Loaded, list[MailerError]]]:
    """Load each event and compose every delivery of the valid ones: `mailer check`.

    One event at a time, so the caller can show progress over a long list.
    """
    outbox = Outbox.from_settings(settings)
    defaults = defaults_for(settings)
    try:
        for source in sources:
            loaded = judge_event(source, defaults=defaults, renderer=outbox.renderer)
            if loaded.error is not None:
                yield loaded, list(getattr(loaded.error, "problems", [loaded.error]))
            else:
                event = loaded.event
                assert event is not None
                advice = day_off_notes(event, defaults.days_off, language=defaults.language)
                advice += untranslated_notes(event)
                loaded = dataclasses.replace(loaded, notes=(*loaded.notes, *advice))
                yield loaded, outbox.check(event, now=now)
    finally:  # the rendering workers, also when the caller stops early
        outbox.close()


def judge_event(source: Path, *, defaults: EventDefaults, renderer: Renderer) -> Loaded:
    """One event file judged as `check` and the running service both judge it (SPEC §4,
    §5.2): read and parsed, its attachments there, and each mail's template found in a
    language the mail may go out in. A file that fails is invalid as a whole.

    Cheap (a few file look-ups per mail, nothing compiled): the service judges every file it
    reads. Compiling and rendering for every recipient is `check`'s extra work; in the
    service a template that fails then fails that delivery.
    """
    loaded = load_event(source, defaults=defaults)
    event = loaded.event
    if event is None:
        return loaded
    problems, notes = renderer.judge(event)
    loaded = dataclasses.replace(loaded, notes=(*loaded.notes, *notes))
    if not problems:
        return loaded
    return dataclasses.replace(loaded, event=None, error=Problems(problems))


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
