"""Language codes: the one rule for writing them, the order in which they are tried, and
which of them have templates."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # events.py checks codes with this module: no import cycle at run time
    from mailer.events import Event

# The one rule for a language code, wherever one is written (config.toml, an event, a mail,
# a CSV column, a templates/ folder): the shape of a BCP 47 tag. A primary subtag of 2-3
# letters in lower case, as ISO 639 (and babel) writes it, then any subtags of 1-8 letters
# or digits, in any case: "sv", "en", "sv-FI", "zh-Hant", "es-419". Codes name folders, so
# the rule also keeps a value from reaching outside templates/ ("../", "/", ".").
LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
LANGUAGE_EXPECTED = 'expected a language code like "sv", "en" or "sv-FI", got {}'


# Longer than any real tag (BCP 47's longest registered ones are ~30): a code names a folder,
# and a 300-character one would fail the look-up with "file name too long".
MAX_LANGUAGE_CHARS = 35


def is_language(code: object) -> bool:
    """Whether `code` is a language code by the rule above (a whole string, no newline)."""
    return (
        isinstance(code, str)
        and len(code) <= MAX_LANGUAGE_CHARS
        and LANGUAGE.fullmatch(code) is not None
    )


def is_language_folder(name: str) -> bool:
    """Whether a templates/ folder is named by a language code: the rule, in lower case,
    since `chain` looks codes up in lower case ("sv-FI" is read from sv-fi/)."""
    return is_language(name) and name == name.lower()


def chain(*languages: str | None) -> list[str]:
    """Valid language codes in order, each followed by its base ("sv-se", then "sv")."""
    found: list[str] = []
    for language in languages:
        code = (language or "").strip().lower().replace("_", "-")
        for candidate in (code, code.split("-")[0]):
            if is_language_folder(candidate) and candidate not in found:
                found.append(candidate)
    return found


def is_served(code: str, there: list[str]) -> bool:
    """Whether a language, or its base ("sv" for "sv-FI"), has templates."""
    return bool(set(chain(code)).intersection(there))


def no_templates(code: str, there: list[str]) -> str:
    """The message for a language nobody wrote templates in, naming those there are."""
    return f'no templates in "{code}" (there are: {_listed(there) or "none"})'


def unserved_notes(event: Event, there: list[str]) -> list[str]:
    """A note for each recipients' language that has no templates: such people get the
    mail's or the event's language (people cannot all be served; an event can)."""
    counts = Counter(r.language for r in event.recipients if r.language)
    notes = []
    for code, n in sorted(counts.items()):
        if not is_served(code, there):
            who = "1 recipient has" if n == 1 else f"{n} recipients have"
            notes.append(
                f'{event.source}: {who} language "{code}", which has no templates (there are: '
                f"{_listed(there)}); they get the mail's or the event's language"
            )
    return notes


def _listed(there: list[str]) -> str:
    return ", ".join(f'"{c}" ({_english(c)})' for c in there)


def _english(code: str) -> str:
    """ "Swedish" for "sv": an organiser who wrote "se" (Sweden) sees which code is meant."""
    # Imported here: config.toml's language is checked with this module by every command.
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(code.replace("-", "_")).english_name or code
    except (ValueError, UnknownLocaleError):
        return code
