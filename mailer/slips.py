"""An organiser's slips, said in their words (pure): a name a letter or two from one that has a
meaning (a key, a group), and the TOML a word processor or a habit writes that Python's reader
refuses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mailer.errors import Collector
from mailer.recipients import Recipient, shown

# Up to this length a name is short enough that one added or dropped letter makes another
# plausible word ("time" for "title", "email" for "mail"): only a case change or two
# neighbouring letters swapped ("titel") counts as a slip. Longer names allow two edits.
SHORT_NAME = 5
MAX_EDITS = 2
# What a word processor (or macOS's "smart quotes") puts where a straight quote was typed.
CURLY_QUOTES = "“”„‟‘’‚‛«»"
# A date-time, or a time, with hours and minutes but no seconds: TOML (as Python reads it,
# before TOML 1.1) requires the seconds.
_NO_SECONDS = re.compile(
    r"(?<![\d:.-])(?P<date>\d{4}-\d{2}-\d{2}[Tt ])?(?P<hm>\d{2}:\d{2})(?![\d:])"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)
# A key (bare or quoted) just before an `=`: the last one before a value names what it is.
_KEY = re.compile(r'("[^"]*"|\'[^\']*\'|[\w-]+)[ \t]*\Z')
# Longer than any key a person types; bounds the search for one on a long line.
MAX_KEY = 100
# Slips are made on lines a person typed; a longer line is no such slip, and is not searched.
MAX_LINE = 2000
# Where tomllib (Python 3.11) says a problem is: "… (at line 2, column 20)".
_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def edits(a: str, b: str) -> int:
    """How many letters to add, drop, change or swap with a neighbour to turn `a` into `b`
    (optimal string alignment, the Damerau–Levenshtein distance of a typist's slips)."""
    before: list[int] = []
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], before[j - 2] + 1)
        before, row = row, current
    return row[-1]


def is_slip_for(name: str, known: str) -> bool:
    """Whether `name` reads as `known` mistyped (see SHORT_NAME for the rule)."""
    if name == known:
        return False
    if name.lower() == known.lower():
        return True
    if len(known) <= SHORT_NAME:
        return sorted(name) == sorted(known) and edits(name, known) == 1
    return abs(len(name) - len(known)) <= MAX_EDITS and edits(name, known) <= MAX_EDITS


def meant(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` is a slip for, the nearest first (ties alphabetically), or None."""
    near = [k for k in known if is_slip_for(name, k)]
    return min(near, key=lambda k: (edits(name, k), k)) if near else None


def mailed_groups(doc: Mapping[str, Any]) -> set[str]:
    """Groups some mail goes to or `[recipients] groups` declares, as written (checked later)."""
    table = doc.get("recipients")
    named = [table.get("groups")] if isinstance(table, dict) else []
    mails = doc.get("mail")
    named += [m.get("to") for m in mails if isinstance(m, dict)] if isinstance(mails, list) else []
    lists = [[n] if isinstance(n, str) else n for n in named if isinstance(n, str | list)]
    return {"all"} | {g for names in lists for g in names if isinstance(g, str)}


def check_groups(
    found: list[tuple[str, Recipient]], *, mailed: set[str], problems: Collector, label: str = ""
) -> None:
    """A person's group that no mail goes to and is a slip for one that some mail does
    (`registred`) would silently cost them that mail: an error, naming where they are listed.
    A group that resembles none is a tag for later, and allowed; so is one declared in
    `[recipients] groups`. `label` is left off `where` (a CSV's problems name just the row)."""
    unknown = set().union(*{r.groups for _, r in found}) - mailed  # the sets are shared
    slips = {g: m for g in unknown if (m := meant(g, mailed))}
    for where, recipient in found if slips else ():
        for group in sorted(recipient.groups & set(slips)):
            problems.add(
                f"{where.removeprefix(label)}.groups",
                f'no mail goes to group "{shown(group)}"; did you mean "{shown(slips[group])}"? '
                "(a group of its own is declared in [recipients] groups)",
            )


def explain_toml_error(text: str, message: str) -> tuple[int, str | None, str] | None:
    """A TOML error an organiser would make -> (line, key, what to write instead), or None
    when it is none of those, found by reading the line tomllib points at."""
    at = _AT.search(message)
    lines = text.split("\n")
    if at is None or not 0 < int(at.group(1)) <= len(lines):
        return None
    number, column = int(at.group(1)), int(at.group(2)) - 1
    line = lines[number - 1]
    if len(line) > MAX_LINE:
        return None
    for found in _NO_SECONDS.finditer(line):
        if found.start() <= column < found.end():
            written = f"{found['date'] or ''}{found['hm']}:00{found['zone'] or ''}"
            advice = f"write the time with seconds: {written}"
            return number, _key_before(line, found.start()), advice
    # The reader stumbles at the curly quote, or (after a straight one) at the line's end.
    curly = [i for i, c in enumerate(line) if c in CURLY_QUOTES]
    if curly:
        spot = column if column in curly else curly[0]
        quotes = "…".join(line[i] for i in curly[:2])
        shown = f"curly quotes {quotes}" if len(curly) > 1 else f"a curly quote {quotes}"
        advice = f'use straight quotes "…" — the file has {shown} (a word processor\'s)'
        return number, _key_before(line, spot), advice
    return None


def _key_before(line: str, column: int) -> str | None:
    before, equals, _ = line[:column].rpartition("=")
    found = _KEY.search(before[-MAX_KEY:]) if equals else None
    return found.group(1) if found else None
