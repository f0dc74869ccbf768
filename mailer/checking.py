"""`mailer check` and the service's judging of an event file: loaded, its templates found,
and (for `check`) every delivery composed.

Split from `outbox.py`, which composes one message: this is the walk over the events that
says which are valid, shared by `check` and the service (`judge_event`), so what `check`
accepts is what the service takes in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mailer.advice import day_off_notes, untranslated_notes
from mailer.config import Settings
from mailer.errors import MailerError, Problems
from mailer.events import EventDefaults
from mailer.outbox import Outbox
from mailer.render import Renderer
from mailer.sources import Loaded, defaults_for, load_event


def check_events(
    settings: Settings, sources: list[Path], *, now: datetime
) -> Iterator[tuple[Loaded, list[MailerError]]]:
    """Load each event and compose every delivery of the valid ones: `mailer check`.

    One event at a time, so the caller can show progress over a long list.
    """
    outbox = Outbox.from_settings(settings)
    defaults = defaults_for(settings)
    try:
        for source in sources:
            loaded = judge_event(source, defaults=defaults, renderer=outbox.renderer)
            if loaded.error is not None:
                yield loaded, list(getattr(loaded.error, "problems", [loaded.error]))
            else:
                event = loaded.event
                assert event is not None
                advice = day_off_notes(event, defaults.days_off, language=defaults.language)
                advice += untranslated_notes(event)
                loaded = dataclasses.replace(loaded, notes=(*loaded.notes, *advice))
                yield loaded, outbox.check(event, now=now)
    finally:  # the rendering workers, also when the caller stops early
        outbox.close()


def judge_event(source: Path, *, defaults: EventDefaults, renderer: Renderer) -> Loaded:
    """One event file judged as `check` and the running service both judge it (SPEC §4,
    §5.2): read and parsed, its attachments there, and each mail's template found in a
    language the mail may go out in. A file that fails is invalid as a whole.

    Cheap (a few file look-ups per mail, nothing compiled): the service judges every file it
    reads. Compiling and rendering for every recipient is `check`'s extra work; in the
    service a template that fails then fails that delivery.
    """
    loaded = load_event(source, defaults=defaults)
    event = loaded.event
    if event is None:
        return loaded
    problems, notes = renderer.judge(event)
    loaded = dataclasses.replace(loaded, notes=(*loaded.notes, *notes))
    if not problems:
        return loaded
    return dataclasses.replace(loaded, event=None, error=Problems(problems))
