"""What `mailer check` says though nothing is wrong (exit 0), in the organiser's words (pure):
a mail due before the event on a weekend or a public holiday (SPEC §14)."""

from __future__ import annotations

from mailer.dates import weekday_time
from mailer.events import Event
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
