"""Reading an event's own files safely: within a size limit, never through a link out of the
event's folder (or, for a single-file event, into another event's subfolder), never a FIFO,
device or hard-linked file, and a CSV decoded as an organiser's Excel wrote it.

Split from `sources.py`, which finds and reads events; everything that opens one of an
event's files goes through here, so the rules hold once.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from mailer.errors import InputError, printable
from mailer.events import is_folder_event
from mailer.mails import FLAT_RULE

# An event file is a page of TOML; anything this large is a mistake (a CSV saved as .toml).
MAX_EVENT_BYTES = 1 << 20
# 200,000 recipients of ~100 bytes each; a larger list is better split into several events.
MAX_CSV_BYTES = 20 << 20
# Base64 makes a 10 MB file ~13.7 MB on the wire; most relays refuse messages over 20-25 MB.
MAX_ATTACHMENT_BYTES = 10 << 20
# A character of two to four bytes as UTF-8 writes it: Windows-1252 text (Excel's
# "CSV (semikolonavgränsad)") hardly ever holds one, as its letters are followed by ASCII.
UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
SAVE_AS_UTF8 = 'save it from Excel as "CSV UTF-8 (kommaavgränsad)"'


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
