"""Event file table + CSV text -> a validated `Event`, or every problem at once (pure:
paths are resolved, never opened).

Split from `events.py`, which holds the values: this module is the checks of each key an
event file may hold (SPEC §4, §10, §14), so changing what a key accepts means opening this
file only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer import slips, timing
from mailer.errors import Collector
from mailer.events import Event, EventDefaults, Organiser, event_id_of, is_folder_event
from mailer.languages import is_language
from mailer.mails import Mail, Timeline, check_keys, inside, parse_mails
from mailer.recipient_table import known_groups, parse_recipients
from mailer.recipients import CONTROL, Recipient, body_text, check_address, key_name
from mailer.texts import parse_texts

# SPEC §10's switches: cancelled (calendar-relevant), hold and notify_changes (not).
SWITCHES = ("cancelled", "hold", "notify_changes")
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
        *SWITCHES,
        "text",  # [text.<lang>]: texts per language (texts.py, SPEC §14)
        "from_name",
    )
)
ORGANISER_KEYS = frozenset(("name", "email"))


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
    switches = _switches(doc, problems=problems)
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
        **switches,
        texts=texts,
        from_name=text["from_name"] or None,
    )


def _switches(doc: Mapping[str, Any], *, problems: Collector) -> dict[str, bool]:
    """`cancelled`, `hold` and `notify_changes`: true or false (SPEC §10)."""
    found = {}
    for key in SWITCHES:
        if key in doc:
            if isinstance(doc[key], bool):
                found[key] = doc[key]
            else:
                problems.add(key, f"expected true or false, got {doc[key]!r}")
    return found


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
