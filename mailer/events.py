"""Event file text and CSV text -> a validated `Event` (pure: paths are resolved, never opened)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer import slips, timing
from mailer.errors import Collector
from mailer.languages import is_language
from mailer.mails import Mail, Timeline, check_keys, inside, parse_mails
from mailer.recipient_table import known_groups, parse_recipients
from mailer.recipients import CONTROL, Recipient, body_text, check_address, key_name
from mailer.texts import TRANSLATED, parse_texts, texts_for
from mailer.toml_text import load_toml
from mailer.workdays import SWEDISH, DaysOff

# load_toml lives in toml_text.py; it stays importable from here, as it long was.
__all__ = ["Event", "EventDefaults", "Mail", "Organiser", "Recipient", "load_toml", "parse_event"]

EVENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Keys with a meaning; every other top-level key is free data for the templates.
EVENT_KEYS = frozenset(
    (
        "title",
        "starts",
        "ends",
        "timezone",
        "language",
        "location",
        "organiser",
        "description",
        "program",
        "recipients",
        "mail",
        "text",  # [text.<lang>]: texts per language (texts.py, SPEC §14)
        "from_name",
    )
)
ORGANISER_KEYS = frozenset(("name", "email"))


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


def recipients_file_of(doc: Mapping[str, Any], *, source: Path) -> Path | None:
    """The CSV an event names in `[recipients] file`, so the caller can read it first."""
    table = doc.get("recipients")
    if not isinstance(table, dict) or "file" not in table:
        return None
    return inside(
        source.parent,
        table["file"],
        key="recipients.file",
        problems=Collector(source),
        flat=not is_folder_event(source),
    )


def parse_event(
    doc: Mapping[str, Any], *, source: Path, defaults: EventDefaults, csv_text: str | None = None
) -> Event:
    """A parsed event table (+ the text of its CSV) -> an Event, or every problem at once."""
    problems = Collector(source)
    _check_id(source, problems=problems)
    text = _texts(doc, problems=problems)
    texts = parse_texts(doc.get("text"), meaningful=EVENT_KEYS, problems=problems)
    language = _language(doc, defaults, problems=problems)
    program = _program(doc.get("program", []), problems=problems)
    data = _free_data(doc, problems=problems)
    table = doc.get("recipients", {})
    flat, mailed = not is_folder_event(source), slips.mailed_groups(doc)
    recipients = parse_recipients(
        table, source=source, csv_text=csv_text, mailed=mailed, flat=flat, problems=problems
    )
    organiser = _organiser(doc.get("organiser"), problems=problems)
    timeline = _timeline(doc, defaults, problems=problems)
    mails = _mails(doc, table, recipients, timeline, source=source, problems=problems)
    problems.raise_if_any()
    assert timeline is not None
    return Event(
        id=event_id_of(source),
        source=source,
        title=text["title"],
        starts=timeline.starts,
        ends=timeline.ends,
        timezone=timeline.tz,
        language=language,
        location=text["location"] or None,
        organiser=organiser,
        description=text["description"] or None,
        program=tuple(program),
        data=data,
        recipients=recipients,
        mails=tuple(mails),
        texts=texts,
        from_name=text["from_name"] or None,
    )


def _check_id(source: Path, *, problems: Collector) -> None:
    """The event id, its file or folder name, is one a URL and a database key can hold."""
    if not EVENT_ID.match(event_id_of(source)):
        problems.add(
            None,
            f"event id {event_id_of(source)!r} (the file or folder name) "
            "may hold only lower-case letters a–z, digits and hyphens, "
            "starting with a letter or digit",
        )


def _texts(doc: Mapping[str, Any], *, problems: Collector) -> dict[str, str]:
    """`title` (required), `location`, `from_name` (one line each), `description` (free text)."""
    text = {
        key: _text(doc.get(key), key=key, problems=problems, one_line=key != "description")
        for key in ("title", "location", "description", "from_name")
    }
    if not text["title"]:
        problems.add("title", "required: the event's name, used in subjects and calendars")
    return text


def _language(doc: Mapping[str, Any], defaults: EventDefaults, *, problems: Collector) -> str:
    """The event's language: its own, else the configured one."""
    language = doc.get("language", defaults.language)
    if not is_language(language):
        problems.add("language", f'expected a language code like "sv" or "en", got {language!r}')
    return str(language)


def _mails(
    doc: Mapping[str, Any],
    table: object,
    recipients: tuple[Recipient, ...],
    timeline: Timeline | None,
    *,
    source: Path,
    problems: Collector,
) -> list[Mail]:
    """The `[[mail]]` tables, once the event's times are known: every send time needs them."""
    if not timeline:
        return []
    return parse_mails(
        doc.get("mail", []),
        groups=known_groups(table, recipients, problems=problems),
        timeline=timeline,
        folder=source.parent,
        problems=problems,
        flat=not is_folder_event(source),
    )


def _program(program: object, *, problems: Collector) -> Any:
    """`[[program]]`: a list of tables, their texts checked as body text."""
    if not isinstance(program, list) or not all(isinstance(p, dict) for p in program):
        problems.add(
            "program", "expected a list of tables ([[program]] with at = ..., title = ...)"
        )
    return body_text(program, key="program", problems=problems)


def _timeline(
    doc: Mapping[str, Any], defaults: EventDefaults, *, problems: Collector
) -> Timeline | None:
    """The event's zone, start and end: what every send time is computed from."""
    tz = defaults.timezone
    if "timezone" in doc:
        try:
            tz = ZoneInfo(str(doc["timezone"]))
        # A directory ("Europe") or an overlong name fails as OSError, not as "not found".
        except (ZoneInfoNotFoundError, ValueError, OSError):
            problems.add(
                "timezone", f'expected a time zone like "Europe/Stockholm", got {doc["timezone"]!r}'
            )
    starts = _moment(doc.get("starts"), tz, key="starts", problems=problems)
    ends = _moment(doc.get("ends", doc.get("starts")), tz, key="ends", problems=problems)
    if starts is None or ends is None:
        return None
    if ends < starts:
        problems.add(
            "ends", f"must not be before starts ({starts.isoformat()}), got {ends.isoformat()}"
        )
    return Timeline(starts, ends, tz, defaults.max_lateness, defaults.days_off)


def _moment(value: object, tz: ZoneInfo, *, key: str, problems: Collector) -> datetime | None:
    if not isinstance(value, datetime):
        problems.add(key, f"expected a date and time like 2027-06-16T09:00:00, got {value!r}")
        return None
    try:
        return timing.localize(value, tz) if value.tzinfo is None else value.astimezone(tz)
    except (ValueError, OverflowError):  # 0001-01-01T00:00:00+14:00 has no place in `tz`
        problems.add(key, f"{value.isoformat()} in {tz.key} is out of the years 1-9999")
        return None


def _free_data(doc: Mapping[str, Any], *, problems: Collector) -> dict[str, Any]:
    """The free top-level keys, for templates; one that is a slip for a key with a meaning
    (`organizer`, `locaton`) is an error: passed on as free data, it silently loses the
    Reply-To, the place or the zone."""
    data = {}
    for key, value in doc.items():
        if key in EVENT_KEYS:
            continue
        meant = slips.meant(key, EVENT_KEYS)
        if meant:
            problems.add(
                key_name(key),
                f'unknown key; did you mean "{meant}"? '
                "(a key of your own for the templates must not look like one with a meaning)",
            )
        else:
            data[key] = body_text(value, key=key_name(key), problems=problems)
    return data


def _organiser(value: object, *, problems: Collector) -> Organiser | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add("organiser", 'expected a table: { name = "…", email = "…" }')
        return None
    check_keys(value, ORGANISER_KEYS, prefix="organiser", problems=problems)
    name = _text(value.get("name"), key="organiser.name", problems=problems)
    email = check_address(value.get("email"), key="organiser.email", problems=problems)
    return Organiser(name=name, email=email) if email else None


def _text(value: object, *, key: str, problems: Collector, one_line: bool = True) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(key, f"expected a text, got {value!r}")
        return ""
    if one_line and CONTROL.search(value):
        problems.add(key, f"must be one line without control characters, got {value!r}")
    elif not one_line:
        value = str(body_text(value, key=key, problems=problems))
    return value.strip()
