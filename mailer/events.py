"""Event file text and CSV text -> a validated `Event` (pure: paths are resolved, never opened)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer import slips, timing
from mailer.errors import Collector, InputError
from mailer.mails import LANGUAGE, Mail, Timeline, check_keys, inside, parse_mails
from mailer.recipients import (
    CONTROL,
    Recipient,
    body_text,
    check_address,
    key_name,
    parse_csv,
    parse_people,
    unique,
)

__all__ = ["Event", "EventDefaults", "Mail", "Organiser", "Recipient", "parse_event"]

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
    )
)
RECIPIENTS_KEYS = frozenset(("file", "people", "groups"))
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


def event_id_of(source: Path) -> str:
    """`schedules/<id>.toml` or `schedules/<id>/event.toml` -> `<id>`."""
    return source.parent.name if source.name == "event.toml" else source.stem


def is_folder_event(source: Path) -> bool:
    """`schedules/<id>/event.toml` has a folder of its own; `schedules/<id>.toml` shares one."""
    return source.name == "event.toml"


def load_toml(text: str, *, source: Path) -> dict[str, Any]:
    """TOML text -> a table, or an InputError that points at the line."""
    check_key_depth(text, source=source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        slip = slips.explain_toml_error(text, str(exc))
        if slip is None:
            raise InputError(f"not valid TOML: {exc}", source=source) from exc
        line, key, advice = slip
        where = f"line {line}: {key}" if key else f"line {line}"
        raise InputError(advice, source=source, key=where) from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table: [[[[…]]]]
        message = "not valid TOML: arrays or tables nested too deeply"
        raise InputError(message, source=source) from exc


# tomllib's memory grows with the square of a dotted key's length: `a.a.a…a = 1` 30,000 levels
# deep (a 60 KB line) took 3.5 GB in 11 s. Event files nest a few levels; 32 is generous.
MAX_KEY_DEPTH = 32
# A key is one line; once strings are masked, its segments are bare words or placeholders.
_DEEP = re.compile(rf"[\w-]+(?:[ \t]*\.[ \t]*[\w-]+){{{MAX_KEY_DEPTH},}}")
# Strings and comments, which may hold dots that are no key's.
_QUOTED = re.compile(
    r'"""(?:[^\\"]|\\[\s\S]|"(?!""))*"{3,5}'  # multi-line basic, escapes and all
    r"|'''[\s\S]*?'{3,5}"  # multi-line literal
    r'|"(?:[^"\\\n]|\\.)*"'  # basic
    r"|'[^'\n]*'"  # literal
    r"|#[^\n]*"  # comment
)


def check_key_depth(text: str, *, source: Path) -> None:
    """Refuse a key nested deeper than MAX_KEY_DEPTH (dotted keys, table headers) before
    tomllib sees it, naming its line: a scan linear in the text, ~15 ms a MB when no line
    holds that many dots (tomllib itself takes ~350 ms a MB)."""
    if all(line.count(".") < MAX_KEY_DEPTH for line in text.split("\n")):
        return
    masked = _QUOTED.sub(_placeholder, text)
    found = _DEEP.search(masked)
    if found is None:  # the dots were inside strings or comments
        return
    line = masked.count("\n", 0, found.start()) + 1
    depth = found.group().count(".") + 1
    raise InputError(
        f"a key nested {depth} levels deep; at most {MAX_KEY_DEPTH} are allowed",
        source=source,
        key=f"line {line}",
    )


def _placeholder(match: re.Match[str]) -> str:
    """A quoted key stays one key segment (`s`), a comment goes; line breaks stay for counting."""
    token = match.group()
    return ("" if token.startswith("#") else "s") + "\n" * token.count("\n")


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
    if not EVENT_ID.match(event_id_of(source)):
        problems.add(
            None,
            f"event id {event_id_of(source)!r} (the file or folder name) "
            "may hold only lower-case letters a–z, digits and hyphens, "
            "starting with a letter or digit",
        )
    text = {
        key: _text(doc.get(key), key=key, problems=problems, one_line=key != "description")
        for key in ("title", "location", "description")
    }
    if not text["title"]:
        problems.add("title", "required: the event's name, used in subjects and calendars")
    language = doc.get("language", defaults.language)
    if not isinstance(language, str) or not LANGUAGE.match(language):
        problems.add("language", f'expected a language code like "sv" or "en", got {language!r}')
    program = doc.get("program", [])
    if not isinstance(program, list) or not all(isinstance(p, dict) for p in program):
        problems.add(
            "program", "expected a list of tables ([[program]] with at = ..., title = ...)"
        )
    program = body_text(program, key="program", problems=problems)
    data = _free_data(doc, problems=problems)
    table = doc.get("recipients", {})
    recipients = _recipients(
        table, source=source, csv_text=csv_text, mailed=slips.mailed_groups(doc), problems=problems
    )
    organiser = _organiser(doc.get("organiser"), problems=problems)
    timeline = _timeline(doc, defaults, problems=problems)
    mails = (
        parse_mails(
            doc.get("mail", []),
            groups=_known_groups(table, recipients, problems=problems),
            timeline=timeline,
            folder=source.parent,
            problems=problems,
            flat=not is_folder_event(source),
        )
        if timeline
        else []
    )
    problems.raise_if_any()
    assert timeline is not None
    return Event(
        id=event_id_of(source),
        source=source,
        title=text["title"],
        starts=timeline.starts,
        ends=timeline.ends,
        timezone=timeline.tz,
        language=str(language),
        location=text["location"] or None,
        organiser=organiser,
        description=text["description"] or None,
        program=tuple(program),
        data=data,
        recipients=recipients,
        mails=tuple(mails),
    )


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
    return Timeline(starts=starts, ends=ends, tz=tz, max_lateness=defaults.max_lateness)


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


def _recipients(
    table: object, *, source: Path, csv_text: str | None, mailed: set[str], problems: Collector
) -> tuple[Recipient, ...]:
    if not isinstance(table, dict):
        problems.add("recipients", "expected a table with `file` and/or [[recipients.people]]")
        return ()
    check_keys(table, RECIPIENTS_KEYS, prefix="recipients", problems=problems)
    found: list[tuple[str, Recipient]] = []
    if "file" in table:
        csv_path = inside(
            source.parent,
            table["file"],
            key="recipients.file",
            problems=problems,
            flat=not is_folder_event(source),
        )
        if csv_path and csv_text is not None:
            csv_problems = Collector(csv_path)
            rows = parse_csv(csv_text, problems=csv_problems, label=csv_path.name)
            label = f"{csv_path.name} "
            slips.check_groups(rows, mailed=mailed, problems=csv_problems, label=label)
            problems.extend(csv_problems.problems)
            found += rows
    if "people" in table:
        people = parse_people(table["people"], problems=problems)
        slips.check_groups(people, mailed=mailed, problems=problems)
        found += people
    return unique(found, problems=problems)


def _known_groups(
    table: object, recipients: tuple[Recipient, ...], *, problems: Collector
) -> set[str]:
    """Groups someone is in, plus those declared in `[recipients] groups` for mails to people
    who are not in them yet (nobody has `attended` before the event)."""
    declared = table.get("groups", []) if isinstance(table, dict) else []
    if not isinstance(declared, list) or not all(isinstance(g, str) for g in declared):
        problems.add("recipients.groups", 'expected a list of group names, like ["attended"]')
        declared = []
    return {"all", *declared}.union(*(r.groups for r in recipients))


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
        value = body_text(value, key=key, problems=problems)
    return value.strip()
