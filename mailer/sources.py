"""The schedules folder -> events: finds event files, reads them and their CSVs, checks files.

The only place that opens an event's files, so that size limits and the rule that nothing may
point outside the event's folder (symbolic links included) are enforced once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.config import Settings
from mailer.errors import Collector, InputError, MailerError
from mailer.event_files import (
    MAX_ATTACHMENT_BYTES,
    MAX_CSV_BYTES,
    MAX_EVENT_BYTES,
    check_inside,
    check_regular,
    decode_csv,
    read_bytes,
    read_text,
)
from mailer.event_parser import parse_event, recipients_file_of
from mailer.events import Event, EventDefaults, event_id_of, is_folder_event, load_toml
from mailer.file_stamps import stamp
from mailer.mails import inside
from mailer.workdays import DaysOff

# Editors' and file managers' leftovers that must never be taken for an event.
IGNORED_PREFIXES = (".", "#", "~")
IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part", ".bak")


@dataclass(frozen=True)
class Loaded:
    """One event file as read now: the event, or why it is invalid. `digest` names the content."""

    id: str
    source: Path
    digest: str
    event: Event | None = None
    error: MailerError | None = None
    toml: str = ""
    csv: str | None = None
    notes: tuple[str, ...] = ()  # worth saying though nothing is wrong (a CSV read as cp1252)
    # The attachments as checked, by `attachment_name`: what the store keeps and sends.
    files: dict[str, bytes] = field(default_factory=dict)
    # The files' metadata (file_stamps.py): a start knows them unchanged without reading.
    stamp: str | None = None


def is_ignored(path: Path) -> bool:
    """Hidden, swap and backup files are nobody's event."""
    name = path.name
    return name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES)


def find_event_files(schedules: Path) -> list[Path]:
    """`<id>.toml` directly in `schedules/`, and `<id>/event.toml` one folder down, sorted."""
    if not schedules.is_dir():
        raise InputError("the schedules folder does not exist", source=schedules)
    found = [p for p in schedules.glob("*.toml") if p.is_file() and not is_ignored(p)]
    found += [p for p in schedules.glob("*/event.toml") if not is_ignored(p.parent)]
    return sorted(as_typed(p) for p in found)


def as_typed(path: Path) -> Path:
    """Relative to the working directory when inside it, so that messages name files the way
    a person types them (`schedules/forlabb.toml`)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def load_event(source: Path, *, defaults: EventDefaults) -> Loaded:
    """Read and validate one event file; never raises for bad input, reports it in `error`."""
    text, csv_text = "", None
    notes: tuple[str, ...] = ()
    read_from_ns = time.time_ns()
    try:
        text, doc, csv_text, notes = _read_files(source)
        event = parse_event(doc, source=source, defaults=defaults, csv_text=csv_text)
        fingerprint = check_attachments(event)
        files = read_attachments(event)
    except MailerError as exc:
        digest = _digest(text, csv_text, "")
        return Loaded(event_id_of(source), source, digest, error=exc, notes=notes)
    digest = _digest(text, csv_text, fingerprint)
    csv_path = recipients_file_of(doc, source=source)
    read_from = [csv_path] if csv_path is not None else []
    read_from += [path for mail in event.mails for path in mail.attach]
    return Loaded(
        event.id,
        source,
        digest,
        event=event,
        toml=text,
        csv=csv_text,
        notes=notes,
        files=files,
        stamp=stamp(digest, source, read_from, read_from_ns=read_from_ns),
    )


def peek_digest(source: Path) -> tuple[str, str | None] | None:
    """The digest `load_event` gives a valid event, and its files' stamp, without parsing its
    recipients (a few percent of the cost): at start, an event whose files have not changed
    since it was planned need not be parsed until one of its mails is due. None if anything
    is amiss."""
    read_from_ns = time.time_ns()
    try:
        text, doc, csv_text, _ = _read_files(source)
        mails = doc.get("mail", [])
        named = [a for m in mails if isinstance(m, dict) for a in m.get("attach", [])]
        problems = Collector(source)
        flat = not is_folder_event(source)
        paths = [
            inside(source.parent, a, key="attach", problems=problems, flat=flat) for a in named
        ]
        csv_path = recipients_file_of(doc, source=source)
        fingerprint = "\0".join(_fingerprint(p) for p in paths if p is not None)
    except (MailerError, OSError, TypeError):
        return None
    if problems.problems:
        return None
    digest = _digest(text, csv_text, fingerprint)
    read_from = [p for p in (csv_path, *paths) if p is not None]
    return digest, stamp(digest, source, read_from, read_from_ns=read_from_ns)


def _read_files(source: Path) -> tuple[str, dict[str, Any], str | None, tuple[str, ...]]:
    """The event file's text and table, its CSV's text if it names one, and notes on them."""
    text = read_text(source, root=source.parent, source=source, key=None, limit=MAX_EVENT_BYTES)
    doc = load_toml(text, source=source)
    csv_path = recipients_file_of(doc, source=source)
    if csv_path is None:
        return text, doc, None, ()
    key = "recipients.file"
    data = read_bytes(csv_path, root=source.parent, source=source, key=key, limit=MAX_CSV_BYTES)
    csv_text, note = decode_csv(data, name=csv_path.name, source=source, key=key)
    return text, doc, csv_text, (note,) if note else ()


def _digest(text: str, csv_text: str | None, fingerprint: str) -> str:
    """Names one version of an event: its text, its CSV, its attachments' sizes and times."""
    digest = hashlib.sha256(text.encode())
    if csv_text is not None:
        digest.update(b"\0" + csv_text.encode())
    digest.update(fingerprint.encode())
    return digest.hexdigest()


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def check_attachments(event: Event) -> str:
    """Every attachment exists, stays inside the folder and is within the size limit.

    Returns a fingerprint (name, size, mtime) so that replacing a PDF counts as a change.
    """
    problems = Collector(event.source)
    fingerprint = []
    for mail in event.mails:
        for path in mail.attach:
            key = f"{mail.key}.attach"
            try:
                check_inside(path, root=event.folder, source=event.source, key=key)
                size = check_regular(path, source=event.source, key=key).st_size
            except InputError as exc:
                problems.extend([exc])
                continue
            except OSError:
                problems.add(key, f"no such file: {path.name}")
                continue
            if size > MAX_ATTACHMENT_BYTES:
                problems.add(
                    key, f"{path.name} is {size:,} bytes; the limit is {MAX_ATTACHMENT_BYTES:,}"
                )
            fingerprint.append(_fingerprint(path))
    problems.raise_if_any()
    return "\0".join(fingerprint)


def read_attachments(event: Event) -> dict[str, bytes]:
    """The bytes of every attachment, read as it is checked (within the size limit, inside
    the folder), by `attachment_name`: the version in force keeps these, not the path."""
    return {
        attachment_name(event, path): read_bytes(
            path,
            root=event.folder,
            source=event.source,
            key=f"{mail.key}.attach",
            limit=MAX_ATTACHMENT_BYTES,
        )
        for mail in event.mails
        for path in mail.attach
    }


def attachment_name(event: Event, path: Path) -> str:
    """An attachment's name inside its event's folder, as `attach` names it."""
    return path.relative_to(event.folder).as_posix()


def defaults_for(settings: Settings) -> EventDefaults:
    return EventDefaults(
        language=settings.sender.language,
        timezone=settings.sender.zone,
        max_lateness=settings.sending.max_lateness,
        days_off=DaysOff(settings.sender.holidays, settings.sender.language),
    )


def load_events(settings: Settings) -> list[Loaded]:
    """Every event file in the folder, valid or not, each read through `load_event`: the
    one loading path of `check`, `run`, `rehearse` and `preview`."""
    defaults = defaults_for(settings)
    return [load_event(s, defaults=defaults) for s in find_event_files(settings.paths.schedules)]


def load_stored(source: Path, *, toml: str, csv_text: str | None, defaults: EventDefaults) -> Event:
    """An event's last valid version as the database keeps it, while its file is invalid."""
    return parse_event(
        load_toml(toml, source=source), source=source, defaults=defaults, csv_text=csv_text
    )
