"""`mailer rehearse`: one event's whole timeline played on the real engine in a few seconds.

The engine, the planner, the renderer and the Maildir transport are the production ones;
only the clock is compressed and the database and Maildir are scratch copies, so nothing of
the real state is touched and nothing reaches a mail server.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from mailer.clock import CompressedClock
from mailer.config import MaildirTransport as MaildirSettings
from mailer.config import Settings
from mailer.engine import Engine
from mailer.errors import InputError, Problems
from mailer.events import Event
from mailer.outbox import Outbox
from mailer.sources import defaults_for, load_event
from mailer.store import Store
from mailer.transports.maildir import MaildirTransport

# The compressed clock starts this long before the first mail, so it is seen to fall due.
LEAD = timedelta(minutes=1)
# How long a rehearsal may run past its planned length before we call it stuck.
SLACK_S = 10.0


@dataclass(frozen=True)
class MailTimeline:
    """One mail of the rehearsed event: when, to whom, in which languages, with what."""

    due: datetime
    mail: str
    to: tuple[str, ...]
    languages: dict[str, int]
    attachments: tuple[str, ...]
    states: dict[str, int]


@dataclass(frozen=True)
class Rehearsal:
    folder: Path
    event: Event
    timeline: list[MailTimeline]

    @property
    def maildir(self) -> Path:
        return self.folder / "maildir"


async def rehearse(
    settings: Settings, source: Path, *, out: Path | None, seconds: float, now: datetime
) -> Rehearsal:
    """Play the event in `source` in about `seconds`; raises Problems if it is invalid."""
    loaded = load_event(source, defaults=defaults_for(settings))
    if loaded.error is not None:
        raise loaded.error
    event = loaded.event
    assert event is not None
    outbox = Outbox.from_settings(settings)
    problems = outbox.check(event, now=now)
    if problems:
        raise Problems(problems)
    folder = _scratch_folder(out, event.id)
    scratch = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"database": folder / "mailer.sqlite3"}),
            "transport": MaildirSettings.model_construct(kind="maildir", path=folder / "maildir"),
        }
    )
    await _play(scratch, source, event, seconds=seconds)
    return Rehearsal(folder, event, await _timeline(scratch, event, outbox))


def _scratch_folder(out: Path | None, event_id: str) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix=f"mailer-rehearse-{event_id}-"))
    if out.exists() and any(out.iterdir()):
        raise InputError(
            "must be a new or empty folder, so no earlier rehearsal is mixed in",
            source=out,
            key="--out",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


async def _play(settings: Settings, source: Path, event: Event, *, seconds: float) -> None:
    """Run the engine on a clock fast enough to cover the timeline in `seconds`."""
    if not event.mails:
        return
    start = min(m.due for m in event.mails) - LEAD
    span_s = (max(m.due for m in event.mails) - start).total_seconds()
    clock = CompressedClock(start, speed=max(1.0, span_s / seconds))
    store = await Store.open(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(settings.transport.path), clock=clock
    )
    run = asyncio.create_task(engine.run(sources=[source], watch_folder=False))
    try:
        deadline = asyncio.get_running_loop().time() + seconds + SLACK_S
        while not await _finished(store) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        engine.stop()
        await run
        await store.close()


async def _finished(store: Store) -> bool:
    counts = await store.mail_counts()
    return bool(counts) and not any(
        c.counts["scheduled"] or c.counts["sending"] or c.counts["retrying"] for c in counts
    )


async def _timeline(settings: Settings, event: Event, outbox: Outbox) -> list[MailTimeline]:
    store = await Store.open(settings.paths.database)
    try:
        counts = {c.mail: c.counts for c in await store.mail_counts(event.id)}
    finally:
        await store.close()
    timeline = []
    for mail in sorted(event.mails, key=lambda m: m.due):
        recipients = event.recipients_of(mail)
        languages = Counter(outbox.renderer.language_for(event, mail, r) for r in recipients)
        attachments = tuple(p.name for p in mail.attach) + (
            (f"{event.id}.ics",) if mail.calendar else ()
        )
        states = {str(k): v for k, v in counts.get(mail.name, {}).items() if v}
        timeline.append(
            MailTimeline(mail.due, mail.name, mail.to, dict(languages), attachments, states)
        )
    return timeline
