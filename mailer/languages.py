"""Language codes: the order in which they are tried, and which of them have templates."""

from __future__ import annotations

import re
from collections import Counter

from babel import Locale, UnknownLocaleError

from mailer.events import Event

# Language codes name folders: the pattern keeps a CSV value from reaching outside templates/.
LANGUAGE_FOLDER = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")


def chain(*languages: str | None) -> list[str]:
    """Valid language codes in order, each followed by its base ("sv-se", then "sv")."""
    found: list[str] = []
    for language in languages:
        code = (language or "").strip().lower().replace("_", "-")
        for candidate in (code, code.split("-")[0]):
            if LANGUAGE_FOLDER.fullmatch(candidate) and candidate not in found:
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
    try:
        return Locale.parse(code.replace("-", "_")).english_name or code
    except (ValueError, UnknownLocaleError):
        return code
