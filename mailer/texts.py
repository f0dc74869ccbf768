"""`[text.<lang>]`: an event's texts in another language (SPEC §14), pure.

`[text.en] title = "…"` replaces the top-level `title` for everyone whose mail is rendered in
English, in the templates and in the .ics; any free key may be given per language too. Only
texts differ per language: times, recipients and mails are the event's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailer.errors import Collector
from mailer.languages import chain, is_language
from mailer.recipients import CONTROL, body_text, key_name

# Texts with a meaning that a language may replace; the other keys with a meaning may not.
TRANSLATED = frozenset(("title", "location", "description", "program"))
ONE_LINE = frozenset(("title", "location"))


def parse_texts(
    value: object, *, meaningful: frozenset[str], problems: Collector
) -> dict[str, dict[str, Any]]:
    """`[text.<lang>]` tables -> {language: {key: text}}, every problem recorded."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        problems.add("text", 'expected tables per language, like [text.en] title = "…"')
        return {}
    texts = {}
    for language, table in value.items():
        prefix = f"text.{key_name(language)}"
        if not is_language(language):
            problems.add(prefix, f'expected a language code like "en", got {language!r}')
            continue
        texts[language.lower()] = _table(
            table, prefix=prefix, meaningful=meaningful, problems=problems
        )
    return texts


def _table(
    table: dict[str, Any], *, prefix: str, meaningful: frozenset[str], problems: Collector
) -> dict[str, Any]:
    kept = {}
    for key, value in table.items():
        where = f"{prefix}.{key_name(key)}"
        if key in meaningful and key not in TRANSLATED:
            allowed = ", ".join(sorted(TRANSLATED))
            problems.add(where, f"only texts may differ per language ({allowed}, keys of your own)")
        elif key in ONE_LINE and (not isinstance(value, str) or CONTROL.search(value)):
            problems.add(where, f"expected one line of text, got {value!r}")
        elif key == "program" and not (
            isinstance(value, list) and all(isinstance(p, dict) for p in value)
        ):
            problems.add(where, "expected a list of tables, as the event's own [[program]]")
        else:
            kept[key] = body_text(value, key=where, problems=problems)
    return kept


def texts_for(texts: Mapping[str, Mapping[str, Any]], language: str) -> Mapping[str, Any]:
    """The texts for `language` ("en-gb" falls back on "en"), or none."""
    return next((texts[code] for code in chain(language) if code in texts), {})
