"""What goes out: each delivery's message composed from event, templates and sender.

The engine, `check` and `preview` all compose through here, so what `check` accepted is
exactly what is sent. Attachments are read once per mail, not once per recipient: for the
service, as the version in force keeps them in the database (`use_files`), never the folder
as it is now; for `check` and `preview`, from the folder.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from mailer.config import Settings
from mailer.errors import InputError, MailerError
from mailer.events import Event, Mail, Recipient
from mailer.ics import REQUEST, Identity, calendar_file, with_attendee
from mailer.message import Attachment, Sender, build_message
from mailer.render import Rendered, Renderer
from mailer.rendering import RenderPool
from mailer.sources import MAX_ATTACHMENT_BYTES, attachment_name, read_bytes

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
        # Each calendar file without its ATTENDEE, per (event, mail, language, identity).
        self._calendars: dict[tuple[str, str, str, Identity], Attachment] = {}
        self._stored: dict[str, dict[str, bytes]] = {}  # event -> its files as checked

    async def compose_async(
        self,
        event: Event,
        mail: Mail,
        recipient: Recipient,
        *,
        now: datetime,
        identity: Identity | None = None,
        mid: str | None = None,
    ) -> bytes:
        """`compose` for the service: the event loop goes on while a worker renders; `mid`
        is the delivery's Message-ID."""
        rendered = await self.pool.render(event, mail, recipient)
        return self._build(event, mail, recipient, rendered, now=now, identity=identity, mid=mid)

    def compose(
        self,
        event: Event,
        mail: Mail,
        recipient: Recipient,
        *,
        now: datetime,
        identity: Identity | None = None,
    ) -> bytes:
        """The message `recipient` gets for `mail`; raises MailerError if it cannot be made.
        Blocks while a worker renders, at most its deadline (`check`, `preview`).
        `identity`: the calendar file's SEQUENCE and METHOD (SPEC §10; the first by default)."""
        rendered = self.pool.render_now(event, mail, recipient)
        return self._build(event, mail, recipient, rendered, now=now, identity=identity, mid=None)

    def close(self) -> None:
        """End the rendering workers."""
        self.pool.close()

    def _build(
        self,
        event: Event,
        mail: Mail,
        recipient: Recipient,
        rendered: Rendered,
        *,
        now: datetime,
        identity: Identity | None,
        mid: str | None,
    ) -> bytes:
        return build_message(
            event,
            mail,
            recipient,
            rendered,
            sender=self.sender_for(event),
            attachments=self.attachments(
                event,
                mail,
                now=now,
                language=rendered.language,
                identity=identity,
                attendee=recipient,
            ),
            now=now,
            mid=mid,
        )

    def identity(self, sequence: int = 0, *, method: str = REQUEST) -> Identity:
        """The calendar identity of a revision; the sender is the ORGANIZER of an event that
        names none (iTIP requires one)."""
        return Identity(sequence, method, self.sender.name, self.sender.address)

    def sender_for(self, event: Event) -> Sender:
        """`sender.from`, with the event's `from_name` as its display name if it has one."""
        if not event.from_name or event.from_name == self.sender.name:
            return self.sender  # as for most events: no copy per message
        return dataclasses.replace(self.sender, name=event.from_name)

    def attachments(
        self,
        event: Event,
        mail: Mail,
        *,
        now: datetime,
        language: str = "",
        identity: Identity | None = None,
        attendee: Recipient | None = None,
    ) -> tuple[Attachment, ...]:
        """The mail's files, read once and shared by every recipient's message, and its .ics
        in `language` (its [text.<lang>] may differ) at `identity`'s SEQUENCE and METHOD
        (SPEC §10; the first by default), naming `attendee`: made once per language and
        revision, the ATTENDEE line per message."""
        key = (event.id, mail.name)
        if key not in self._files:
            self._files[key] = tuple(
                Attachment(path.name, self._bytes_of(event, mail, path)) for path in mail.attach
            )
        if not mail.calendar:
            return self._files[key]
        ics = self._calendar(event, mail, now=now, language=language, identity=identity)
        return (*self._files[key], with_attendee(ics, attendee))

    def _calendar(
        self, event: Event, mail: Mail, *, now: datetime, language: str, identity: Identity | None
    ) -> Attachment:
        """The mail's calendar file in `language` without its ATTENDEE, made once per
        revision; an earlier revision's are dropped."""
        identity = identity or self.identity()
        key = (event.id, mail.name, language, identity)
        if key not in self._calendars:
            self._calendars = {
                k: v for k, v in self._calendars.items() if k[:2] != key[:2] or k[3] == identity
            }
            shown, domain = event.in_language(language), self.sender.message_id_domain
            self._calendars[key] = calendar_file(shown, domain=domain, now=now, identity=identity)
        return self._calendars[key]

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
        self._calendars = {k: v for k, v in self._calendars.items() if k[0] != event_id}
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
