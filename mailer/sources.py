"""The schedules folder -> events: finds event files, reads them and their CSVs, checks files.

The only place that opens an event's files, so that size limits and the rule that nothing may
point outside the event's folder (symbolic links included) are enforced once.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.config import Settings
from mailer.errors import Collector, InputError, MailerError, printable
from mailer.events import (
    Event,
    EventDefaults,
    event_id_of,
    is_folder_event,
    load_toml,
    parse_event,
    recipients_file_of,
)
from mailer.mails import FLAT_RULE, inside
from mailer.workdays import DaysOff

# An event file is a page of TOML; anything this large is a mistake (a CSV saved as .toml).
MAX_EVENT_BYTES = 1 << 20
# 200,000 recipients of ~100 bytes each; a larger list is better split into several events.
MAX_CSV_BYTES = 20 << 20
# Base64 makes a 10 MB file ~13.7 MB on the wire; most relays refuse messages over 20-25 MB.
MAX_ATTACHMENT_BYTES = 10 << 20
# Editors' and file managers' leftovers that must never be taken for an event.
IGNORED_PREFIXES = (".", "#", "~")
IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part", ".bak")
# A character of two to four bytes as UTF-8 writes it: Windows-1252 text (Excel's
# "CSV (semikolonavgränsad)") hardly ever holds one, as its letters are followed by ASCII.
UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
SAVE_AS_UTF8 = 'save it from Excel as "CSV UTF-8 (kommaavgränsad)"'


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
    try:
        text, doc, csv_text, notes = _read_files(source)
        event = parse_event(doc, source=source, defaults=defaults, csv_text=csv_text)
        fingerprint = check_attachments(event)
        files = read_attachments(event)
    except MailerError as exc:
        digest = _digest(text, csv_text, "")
        return Loaded(event_id_of(source), source, digest, error=exc, notes=notes)
    digest = _digest(text, csv_text, fingerprint)
    return Loaded(
        event.id, source, digest, event=event, toml=text, csv=csv_text, notes=notes, files=files
    )


def peek_digest(source: Path) -> str | None:
    """The digest `load_event` gives a valid event, without parsing its recipients (a few
    percent of the cost): at start, an event whose files have not changed since it was
    planned need not be parsed until one of its mails is due. None if anything is amiss."""
    try:
        text, doc, csv_text, _ = _read_files(source)
        mails = doc.get("mail", [])
        named = [a for m in mails if isinstance(m, dict) for a in m.get("attach", [])]
        problems = Collector(source)
        flat = not is_folder_event(source)
        paths = [
            inside(source.parent, a, key="attach", problems=problems, flat=flat) for a in named
        ]
        fingerprint = "\0".join(_fingerprint(p) for p in paths if p is not None)
    except (MailerError, OSError, TypeError):
        return None
    return None if problems.problems else _digest(text, csv_text, fingerprint)


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


def read_bytes(path: Path, *, root: Path, source: Path, key: str | None, limit: int) -> bytes:
    """A file inside `root` (links followed) within `limit` bytes, or an InputError naming key."""
    check_inside(path, root=root, source=source, key=key)
    try:
        size = check_regular(path, source=source, key=key).st_size
        if size > limit:
            raise InputError(
                f"{path.name} is {size:,} bytes; the limit is {limit:,}", source=source, key=key
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"no such file: {path.name}", source=source, key=key) from exc
    except OSError as exc:
        raise InputError(
            f"cannot read {path.name}: {exc.strerror}", source=source, key=key
        ) from exc


def read_text(path: Path, *, root: Path, source: Path, key: str | None, limit: int) -> str:
    """Like `read_bytes`, decoded as UTF-8."""
    data = read_bytes(path, root=root, source=source, key=key, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            source=source,
            key=key,
        ) from exc


def decode_csv(data: bytes, *, name: str, source: Path, key: str) -> tuple[str, str | None]:
    """A CSV's text, and a note when it was not UTF-8 but Windows-1252: what Excel writes
    for "CSV (semikolonavgränsad)", the file an organiser most often has. Only a file that
    is not UTF-8 is read so (cp1252 decodes almost any bytes), and not one that holds UTF-8
    too (a file pasted together would be mojibake); a byte cp1252 leaves undefined (0x81,
    0x8D, 0x8F, 0x90, 0x9D) is refused, naming its row."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = exc.start
    if UTF8_SEQUENCE.search(data):
        problem = f"byte 0x{data[bad]:02x} is not UTF-8, though the rest of the file is"
        raise InputError(
            f"{name} {_row_of(data, bad)}: {problem}; {SAVE_AS_UTF8}", source=source, key=key
        )
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        problem = f"byte 0x{data[exc.start]:02x} is neither UTF-8 nor Windows-1252 text"
        raise InputError(
            f"{name} {_row_of(data, exc.start)}: {problem}; {SAVE_AS_UTF8}", source=source, key=key
        ) from exc
    note = (
        f'{name} is not UTF-8; read as Windows-1252 (Excel\'s "CSV (semikolonavgränsad)"); '
        'save it as "CSV UTF-8" to be sure'
    )
    return text, f"{printable(str(source))}: {key}: {note}"


def _row_of(data: bytes, offset: int) -> str:
    """The CSV row (line, as parse_csv counts them) that holds the byte at `offset`."""
    line = data.count(b"\n", 0, offset) + 1
    return f"row {line}"


def check_inside(path: Path, *, root: Path, source: Path, key: str | None) -> None:
    """Refuse a path that leaves `root` once symbolic links are followed, or for a single-file
    event (whose root is schedules/ itself) one that leads into a subfolder: another event's."""
    try:
        resolved = path.resolve()
    except RuntimeError as exc:  # pathlib's "Symlink loop"
        raise InputError(f"{path.name} is a loop of links", source=source, key=key) from exc
    if not resolved.is_relative_to(root.resolve()):
        raise InputError(
            f"{path.name} leads outside the event's folder (a link?)", source=source, key=key
        )
    if not is_folder_event(source) and resolved.parent != root.resolve():
        raise InputError(
            f"{path.name} leads into a subfolder (a link?); {FLAT_RULE}", source=source, key=key
        )


def check_regular(path: Path, *, source: Path, key: str | None) -> os.stat_result:
    """The file's status; a FIFO or device would block or never end where it is read.

    A file with other names (hard links) is refused: its content may be anything on the
    machine that the organiser could not otherwise read (a link to /etc/passwd named
    report.pdf was sent), and no path check can see where its other names are.
    """
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        raise InputError(f"{path.name} is not a regular file", source=source, key=key)
    if status.st_nlink > 1:
        raise InputError(
            f"{path.name} has other names (hard links) on this machine; "
            "copy the file into the event's folder instead",
            source=source,
            key=key,
        )
    return status


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
