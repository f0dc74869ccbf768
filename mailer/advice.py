"""What `mailer check` says though nothing is wrong (exit 0), in the organiser's words (pure):
a mail due before the event on a weekend or a public holiday, and readers of a language the
event has no `[text.<lang>]` for (SPEC §14)."""

from __future__ import annotations

from collections import Counter

from mailer.dates import weekday_time
from mailer.events import Event
from mailer.texts import texts_for
from mailer.workdays import DaysOff

# How `check` starts the line of a note that is a warning (printing.py shows it as it is).
WARNING = "warning "


def day_off_notes(event: Event, days_off: DaysOff, *, language: str) -> list[str]:
    """A note for each mail due before the event on a day off: it is not moved (the
    organiser may mean it), but a report sent on a Saturday is read on Monday."""
    notes = []
    for mail in event.mails:
        day = mail.due.astimezone(event.timezone).date()
        if mail.due >= event.starts or not days_off.is_day_off(day):
            continue
        why = days_off.name_of(day) or "a weekend"
        notes.append(
            f"{WARNING}{event.source}: {mail.key}.send_at: due {weekday_time(mail.due, language)}, "
            f"{why}, a day off in {days_off.country}; to send on a working day instead, "
            'count working days: "start - 2 workdays at 08:00"'
        )
    return notes


def untranslated_notes(event: Event) -> list[str]:
    """A note for each language that recipients read, other than the event's own, which has
    no `[text.<lang>]`: they get the event's title and description as written."""
    own = event.language.split("-")[0].lower()
    counts = Counter(
        (r.language or "").split("-")[0].lower() for r in event.recipients if r.language
    )
    notes = []
    for code, n in sorted(counts.items()):
        if code and code != own and not texts_for(event.texts, code):
            who = "1 recipient reads" if n == 1 else f"{n} recipients read"
            notes.append(
                f'{WARNING}{event.source}: {who} "{code}" and the event has no [text.{code}]: '
                f'they get its title and description in "{event.language}" '
                f'(add [text.{code}] title = "…", description = "…")'
            )
    return notes
