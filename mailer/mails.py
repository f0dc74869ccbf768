"""`[[mail]]` tables -> `Mail`s with their send and expiry times computed (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

from mailer import timing
from mailer.errors import Collector
from mailer.languages import is_language
from mailer.recipients import CONTROL, shown
from mailer.workdays import SWEDISH, DaysOff

MAIL_KEYS = frozenset(
    ("name", "send_at", "to", "template", "subject", "attach", "calendar", "expires", "language")
)
# Any subfolder of schedules/ is, or may become, another event's folder (the watcher counts
# every file in it as that event's), so a single-file event may use none of them.
FLAT_RULE = "a single-file event's files lie beside it in the schedules folder"
FLAT_HINT = "(give the event a folder of its own for more)"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Mail:
    """One `[[mail]]` entry with its times computed (aware datetimes in the event's zone)."""

    index: int
    name: str
    due: datetime
    expires: datetime
    to: tuple[str, ...]
    template: str
    subject: str | None = None
    attach: tuple[Path, ...] = ()
    calendar: bool = False
    language: str | None = None

    @property
    def key(self) -> str:
        """How error messages name this mail: `mail[1] "report"`."""
        return f'mail[{self.index}] "{self.name}"'


@dataclass(frozen=True)
class Timeline:
    """What `send_at` and `expires` are computed against."""

    starts: datetime
    ends: datetime
    tz: ZoneInfo
    max_lateness: timedelta
    days_off: DaysOff = SWEDISH

    def resolve(self, spec: object, *, key: str, problems: Collector) -> datetime | None:
        if not isinstance(spec, str | datetime):
            problems.add(key, 'required: a time like "start - 21d at 09:00" or 2027-05-26T09:00:00')
            return None
        try:
            return timing.resolve_time(
                spec, start=self.starts, end=self.ends, tz=self.tz, days_off=self.days_off
            )
        except ValueError as exc:
            problems.add(key, str(exc))
            return None

    def default_expiry(self, due: datetime) -> datetime:
        """SPEC §5.4: a mail before the event is pointless once it starts; after it, it ages."""
        return self.starts if due < self.starts else due + self.max_lateness


def inside(
    folder: Path, relative: object, *, key: str, problems: Collector, flat: bool = False
) -> Path | None:
    """Resolve a path an event file names, refusing anything that could leave `folder`.

    `flat` (a single-file event, whose folder is schedules/ itself): the file must lie
    directly in it, as subfolders are other events' folders. Only the text is checked here
    (absolute paths, `..`); links out are caught where the file is opened, because only
    there is the file system consulted.
    """
    if not isinstance(relative, str) or not relative.strip():
        problems.add(key, "expected a file name relative to the event file")
        return None
    if CONTROL.search(relative):  # a NUL would only fail later, where the file is opened
        problems.add(key, f"{relative!r}: control characters are not allowed in a file name")
        return None
    parts = PurePosixPath(relative.replace("\\", "/"))
    if parts.is_absolute() or PureWindowsPath(relative).drive or ".." in parts.parts:
        problems.add(key, f"{relative!r} leaves the event's folder; name a file inside it")
        return None
    if flat and len(parts.parts) > 1:
        problems.add(key, f"{relative!r} is in a subfolder; {FLAT_RULE} {FLAT_HINT}")
        return None
    return folder.joinpath(*parts.parts)


def parse_mails(
    entries: object,
    *,
    groups: set[str],
    timeline: Timeline,
    folder: Path,
    problems: Collector,
    flat: bool = False,
) -> list[Mail]:
    """Every `[[mail]]` entry, each validated; names must be unique within the event."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.add("mail", "expected a list of tables ([[mail]] with name, send_at, to)")
        return []
    mails: list[Mail] = []
    for index, entry in enumerate(entries):
        mail = parse_mail(
            index,
            entry,
            groups=groups,
            timeline=timeline,
            folder=folder,
            problems=problems,
            flat=flat,
        )
        if mail and any(m.name == mail.name for m in mails):
            problems.add(f"{mail.key}.name", f'another mail is already named "{mail.name}"')
        elif mail:
            mails.append(mail)
    return mails


def parse_mail(
    index: int,
    entry: dict[str, Any],
    *,
    groups: set[str],
    timeline: Timeline,
    folder: Path,
    problems: Collector,
    flat: bool = False,
) -> Mail | None:
    """One `[[mail]]` table -> a Mail, or None with every problem recorded."""
    name = entry.get("name")
    key = f'mail[{index}] "{name}"' if isinstance(name, str) else f"mail[{index}]"
    key = key if key.isprintable() else f"mail[{index}]"  # its bad name is shown in .name
    before = len(problems.problems)
    check_keys(entry, MAIL_KEYS, prefix=key, problems=problems)
    if not isinstance(name, str) or not NAME.match(name):
        problems.add(f"{key}.name", f"required: a name of letters, digits, - or _, got {name!r}")
    template = _template(entry.get("template", name), key=key, problems=problems)
    to = _groups(entry.get("to", ["all"]), known=groups, key=f"{key}.to", problems=problems)
    due = timeline.resolve(entry.get("send_at"), key=f"{key}.send_at", problems=problems)
    expires = _expiry(entry, due, timeline=timeline, key=key, problems=problems)
    files = _attachments(entry, folder=folder, key=key, problems=problems, flat=flat)
    language, subject, calendar = _options(entry, key=key, problems=problems)
    if len(problems.problems) > before or due is None or expires is None:
        return None
    return Mail(
        index=index,
        name=str(name),
        due=due,
        expires=expires,
        to=to,
        template=str(template),
        subject=subject,
        attach=tuple(f for f in files if f),
        calendar=calendar,
        language=language,
    )


def _template(template: object, *, key: str, problems: Collector) -> object:
    """The template's name (the mail's own if unset): a name, never a path."""
    if not isinstance(template, str) or not NAME.match(template):
        problems.add(
            f"{key}.template", f'expected a template name like "invitation", got {template!r}'
        )
    return template


def _attachments(
    entry: dict[str, Any], *, folder: Path, key: str, problems: Collector, flat: bool
) -> list[Path | None]:
    """`attach`: each file inside the event's folder (None where one is not)."""
    attach = entry.get("attach", [])
    if not isinstance(attach, list):
        problems.add(f"{key}.attach", 'expected a list of file names, like ["rapport.pdf"]')
        attach = []
    return [inside(folder, a, key=f"{key}.attach", problems=problems, flat=flat) for a in attach]


def _options(entry: dict[str, Any], *, key: str, problems: Collector) -> tuple[Any, Any, Any]:
    """`language`, `subject` and `calendar`, each checked (recorded as problems if wrong)."""
    language = entry.get("language")
    if language is not None and not is_language(language):
        problems.add(f"{key}.language", f'expected a language code like "sv", got {language!r}')
    subject = entry.get("subject")
    if subject is not None and not isinstance(subject, str):
        problems.add(f"{key}.subject", "expected a text (a Jinja template for the subject line)")
    calendar = entry.get("calendar", False)
    if not isinstance(calendar, bool):
        problems.add(f"{key}.calendar", f"expected true or false, got {calendar!r}")
    return language, subject, calendar


def _groups(value: object, *, known: set[str], key: str, problems: Collector) -> tuple[str, ...]:
    wanted = [value] if isinstance(value, str) else value
    if not isinstance(wanted, list) or not wanted or not all(isinstance(g, str) for g in wanted):
        problems.add(key, 'expected a list of groups, like ["registered"]')
        return ()
    for group in wanted:
        if group not in known:
            problems.add(
                key,
                f'unknown group "{shown(group)}" (known: {", ".join(map(shown, sorted(known)))}; '
                "declare a group nobody is in yet in [recipients] groups)",
            )
    return tuple(wanted)


def _expiry(
    entry: dict[str, Any],
    due: datetime | None,
    *,
    timeline: Timeline,
    key: str,
    problems: Collector,
) -> datetime | None:
    if due is None:
        return None
    if "expires" not in entry:
        return timeline.default_expiry(due)
    expires = timeline.resolve(entry["expires"], key=f"{key}.expires", problems=problems)
    if expires is not None and expires <= due:
        problems.add(
            f"{key}.expires",
            f"must be after send_at ({due.isoformat()}), got {expires.isoformat()}",
        )
    return expires


def check_keys(table: object, allowed: frozenset[str], *, prefix: str, problems: Collector) -> None:
    """Inside `[[mail]]` and `[recipients]` a misspelt key must not pass silently."""
    if not isinstance(table, dict):
        return
    for key in table:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            problems.add(f"{prefix}.{shown(key)}", f"unknown key (expected one of: {expected})")
