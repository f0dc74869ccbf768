"""Inline `[[recipients.people]]` tables and CSV text -> validated `Recipient`s (pure)."""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mailer.addresses import InvalidAddress, normalize_address
from mailer.errors import Collector
from mailer.languages import is_language

# Recipients of a parsed event are many (a seminar of 5,000): slots save a __dict__ each, and
# recipients without free columns share one empty mapping, those in the same groups one set.
NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person an event writes to. `key` (the lower-cased address) identifies them across edits."""

    address: str
    name: str = ""
    language: str | None = None
    groups: frozenset[str] = frozenset()
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.address.lower()


# Columns with a meaning of their own; every other column is free template data.
KNOWN_COLUMNS = ("email", "name", "language", "groups")
# Anything below U+0020, DEL and the C1 controls would end up in a header or break a line of
# a mail; so would the Unicode line breaks (NEL U+0085, U+2028, U+2029), which str.splitlines()
# and some mail clients split on.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# In a body, line breaks and tabs are text; other control characters are garbage.
CONTROL_IN_BODY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What CONTROL finds, less the line ends that separate the rows of a CSV.
CONTROL_BUT_LINE_ENDS = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
NO_GROUPS: frozenset[str] = frozenset()
# Line ends typed on Windows (CRLF) or an old Mac (CR) become LF in every text: a lone CR
# reached the message unencoded (`\r.\r\n` in a Maildir file, a SIZE that undercounted).
LINE_END = re.compile(r"\r\n?")


def parse_people(people: object, *, problems: Collector) -> list[tuple[str, Recipient]]:
    """`[[recipients.people]]` -> (where, recipient) pairs; `where` names the entry in errors."""
    if not isinstance(people, list):
        problems.add("recipients.people", "expected a list of tables ([[recipients.people]])")
        return []
    found = []
    for i, row in enumerate(people):
        where = f"recipients.people[{i}]"
        if not isinstance(row, dict):
            problems.add(where, "expected a table with at least `email`")
            continue
        recipient = make_recipient(row, where=where, problems=problems)
        if recipient:
            found.append((where, recipient))
    return found


def parse_csv(text: str, *, problems: Collector, label: str = "") -> list[tuple[str, Recipient]]:
    """CSV text (`;` or `,` separated, a BOM or not) -> (where, recipient) pairs; `where`
    is "row N" after `label` (the file's name), while problems name just the row.

    A hot loop at start (200,000 rows for 1,000 events): a text with no control character
    but line ends and no quote (so no cell holds a line break) is checked for them once,
    not cell by cell.
    """
    text = text.removeprefix("\ufeff")
    header = text.split("\n", 1)[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = [c.strip().lower() for c in next(reader, [])]
    except csv.Error as exc:
        problems.add("header", f"cannot read the CSV: {exc}")
        return []
    if "email" not in columns:
        problems.add("header", f'expected an "email" column, got columns {columns}')
        return []
    clean = '"' not in text and not CONTROL_BUT_LINE_ENDS.search(text)
    named = [(i, c) for i, c in enumerate(columns) if c]
    label = f"{label} " if label else ""
    found = []
    for line, cells in _rows(reader, problems=problems):
        where = f"row {line}"
        if len(cells) > len(columns):
            problems.add(where, f"expected {len(columns)} columns, got {len(cells)}")
            continue
        # Every column exists for every row ("" when empty), so templates can test it.
        cells += [""] * (len(columns) - len(cells))
        row = {c: cells[i].strip() for i, c in named}
        recipient = make_recipient(row, where=where, problems=problems, clean=clean)
        if recipient:
            found.append((label + where, recipient))
    return found


def _rows(reader: Any, *, problems: Collector) -> Iterator[tuple[int, list[str]]]:
    """Non-empty rows with the line they start on (as a spreadsheet user would count)."""
    start = reader.line_num + 1  # line_num is where a row ends: a quoted cell may hold breaks
    try:
        for cells in reader:
            if "".join(cells).strip():
                yield start, cells
            start = reader.line_num + 1
    except csv.Error as exc:  # a cell longer than csv.field_size_limit() (128 KiB)
        problems.add(f"row {reader.line_num}", f"cannot read the CSV from here on: {exc}")


def make_recipient(
    row: Mapping[str, Any], *, where: str, problems: Collector, clean: bool = False
) -> Recipient | None:
    """One row or table -> a Recipient, or None with the problems recorded. `clean`: the
    caller has made sure no value holds a control character (and texts are stripped)."""
    before = len(problems.problems)
    address = check_address(row.get("email"), key=f"{where}.email", problems=problems)
    name = row.get("name", "")
    if not clean:
        name = _text(name, key=f"{where}.name", problems=problems)
    language = row.get("language") or None
    if language is not None and not is_language(language):
        problems.add(f"{where}.language", f'expected a language code like "sv", got {language!r}')
    groups = row.get("groups", "")
    if groups != "":
        groups = _groups(groups, key=f"{where}.groups", problems=problems)
    fields = {k: v for k, v in row.items() if k not in KNOWN_COLUMNS} or NO_FIELDS
    if not clean and fields:
        fields = {
            k: body_text(v, key=f"{where}.{shown(k)}", problems=problems) for k, v in fields.items()
        }
    if len(problems.problems) > before or address is None:
        return None
    return Recipient(address, name, language, groups or NO_GROUPS, fields)


def shown(text: str) -> str:
    """A name from the file (a key, a column, a group) as a one-line message shows it: as written,
    or escaped when it holds a line break or another character that would garble the line."""
    return text if text.isprintable() else repr(text)


def key_name(key: str) -> str:
    """A TOML key as an error message names it: `shown`, and `""` for the empty key."""
    return shown(key) if key else '""'


def check_address(value: object, *, key: str, problems: Collector) -> str | None:
    """A syntactically valid address in normal form, or None with the problem recorded (no DNS)."""
    if not isinstance(value, str) or not value.strip():
        problems.add(key, "required: the recipient's email address")
        return None
    try:
        return normalize_address(value.strip())
    except InvalidAddress as exc:
        problems.add(key, f"invalid address {value!r}: {exc}")
        return None


def _text(value: object, *, key: str, problems: Collector, one_line: bool = True) -> str:
    """A text that may reach a header must be one clean line; free fields may hold line breaks."""
    text = "" if value is None else str(value)
    if (CONTROL if one_line else CONTROL_IN_BODY).search(text):
        problems.add(
            key, f"control characters (line breaks, NUL, …) are not allowed here: {text!r}"
        )
    return text.strip()


def body_text(value: Any, *, key: str, problems: Collector) -> Any:
    """A free value for templates (a text, or lists and tables of them) with its line ends
    made LF; a control character other than a line break or tab (NUL, ESC) is refused, naming
    the key (`program[0].title`), as it has no place in a mail and garbles a screen."""
    if isinstance(value, str):
        if CONTROL_IN_BODY.search(value):
            problems.add(key, f"control characters (NUL, ESC, …) are not allowed here: {value!r}")
        return LINE_END.sub("\n", value) if "\r" in value else value
    if isinstance(value, list):
        return [body_text(v, key=f"{key}[{i}]", problems=problems) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: body_text(v, key=f"{key}.{key_name(k)}", problems=problems) for k, v in value.items()
        }
    return value


def _groups(value: object, *, key: str, problems: Collector) -> frozenset[str]:
    """`registered;attended` as documented; a comma separates too, as an organiser who types
    `registered, attended` means two groups (a group name is a word used in `to`, never a
    phrase with a comma), and read as one name the person silently got neither group's mail."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(g, str) for g in items):
        problems.add(key, 'expected a list of group names, like ["registered", "attended"]')
        return frozenset()
    names = (n.strip() for item in items for n in item.replace(",", ";").split(";"))
    return _group_set(tuple(n for n in names if n))


@functools.lru_cache(maxsize=4096)
def _group_set(names: tuple[str, ...]) -> frozenset[str]:
    """One shared set per distinct list of groups (a handful per event)."""
    return frozenset(names)


def unique(found: list[tuple[str, Recipient]], *, problems: Collector) -> tuple[Recipient, ...]:
    """Refuse a second entry for the same address (any case): one person, one delivery."""
    seen: dict[str, str] = {}
    kept = []
    for where, recipient in found:
        key = recipient.key
        if key in seen:
            problems.add(f"{where}.email", f"{recipient.address} is already listed at {seen[key]}")
            continue
        seen[key] = where
        kept.append(recipient)
    return tuple(kept)
