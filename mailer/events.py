"""The event as the rest of mailer sees it: `Event`, its `Organiser`, the `EventDefaults` it
inherits, and where an event's id and folder come from (pure values, no parsing).

Every layer reads events; only `event_parser.py` makes them. Kept apart so a reader of
`Event` does not wade through the checks of each key of an event file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailer.mails import Mail
from mailer.recipients import Recipient
from mailer.texts import TRANSLATED, texts_for
from mailer.toml_text import load_toml
from mailer.workdays import SWEDISH, DaysOff

# load_toml lives in toml_text.py; it stays importable from here, as it long was.
__all__ = ["Event", "EventDefaults", "Mail", "Organiser", "Recipient", "load_toml"]


@dataclass(frozen=True)
class Organiser:
    name: str
    email: str


@dataclass(frozen=True)
class Event:
    """One event: who, what and when. `data` holds the free top-level keys for templates."""

    id: str
    source: Path
    title: str
    starts: datetime
    ends: datetime
    timezone: ZoneInfo
    language: str
    location: str | None = None
    organiser: Organiser | None = None
    description: str | None = None
    program: tuple[Mapping[str, Any], ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    recipients: tuple[Recipient, ...] = ()
    mails: tuple[Mail, ...] = ()
    cancelled: bool = False
    hold: bool = False
    notify_changes: bool = True
    texts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [text.<lang>]
    from_name: str | None = None  # the display name of From for this event (SPEC §14)

    def in_language(self, language: str) -> Event:
        """The event as readers of `language` see it: its `[text.<lang>]` keys replace the
        top-level ones (title, location, description, program, free keys)."""
        texts = texts_for(self.texts, language)
        if not texts:
            return self
        free = {k: v for k, v in texts.items() if k not in TRANSLATED}
        return dataclasses.replace(
            self,
            title=texts.get("title", self.title),
            location=texts.get("location", self.location),
            description=texts.get("description", self.description),
            program=tuple(texts.get("program", self.program)),
            data={**self.data, **free},
        )

    @property
    def folder(self) -> Path:
        """Where the event's own files (CSV, attachments) must live."""
        return self.source.parent

    @cached_property
    def by_key(self) -> dict[str, Recipient]:
        """Recipients by their key: the engine looks one up per delivery."""
        return {r.key: r for r in self.recipients}

    def gets(self, recipient: Recipient, mail: Mail) -> bool:
        """Whether `recipient` is among those `mail` goes to."""
        return "all" in mail.to or bool(recipient.groups.intersection(mail.to))

    def recipients_of(self, mail: Mail) -> tuple[Recipient, ...]:
        """Everyone in any of the mail's groups; "all" is every recipient."""
        wanted = set(mail.to)
        if "all" in wanted:
            return self.recipients
        return tuple(r for r in self.recipients if r.groups & wanted)


@dataclass(frozen=True)
class EventDefaults:
    """What an event inherits from `[sender]` and `[sending]` when it does not say."""

    language: str
    timezone: ZoneInfo
    max_lateness: timedelta
    days_off: DaysOff = SWEDISH  # `sender.holidays`: for `workdays` (SPEC §14)


def event_id_of(source: Path) -> str:
    """`schedules/<id>.toml` or `schedules/<id>/event.toml` -> `<id>`."""
    return source.parent.name if source.name == "event.toml" else source.stem


def is_folder_event(source: Path) -> bool:
    """`schedules/<id>/event.toml` has a folder of its own; `schedules/<id>.toml` shares one."""
    return source.name == "event.toml"
