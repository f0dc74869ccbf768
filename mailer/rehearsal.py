"""`mailer rehearse`: one event's whole timeline played on the real engine in a few seconds.

The engine, the planner, the renderer and the Maildir transport are the production ones;
only the clock is played (it jumps from one due time to the next), and the database and
Maildir are scratch copies, so nothing of the real state is touched and nothing reaches a
mail server.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailer.clock import ManualClock
from mailer.config import Settings
from mailer.config_transport import MaildirSettings
from mailer.engine import Engine
from mailer.errors import InputError, Problems
from mailer.events import Event
from mailer.outbox import Outbox
from mailer.render import Renderer
from mailer.sources import defaults_for, load_event
from mailer.store.contract import open_store
from mailer.transports.maildir import MaildirTransport

# The played clock starts this long before the first mail, so it is seen to fall due.
LEAD = timedelta(minutes=1)
# How long a rehearsal may run past its planned length before we call it stuck (a mail that
# keeps failing is retried on the played clock, which could otherwise go on for long).
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
    try:
        problems = outbox.check(event, now=now)
    finally:
        outbox.close()  # its rendering workers; the timeline needs only its renderer
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
    """Step the engine from one due time to the next on a clock that jumps there.

    The clock stands still while a step sends, so each message is dated at the time it is
    played and nothing expires because the machine was busy (a clock that ran months in a
    second made 10 ms of load look like hours late). The pauses between steps spread the
    play over about `seconds`, in proportion to the gaps in the real timeline.
    """
    if not event.mails:
        return
    clock = ManualClock(min(m.due for m in event.mails) - LEAD)
    span_s = (max(m.due for m in event.mails) - clock.now()).total_seconds()
    speed = max(1.0, span_s / seconds)
    assert isinstance(settings.transport, MaildirSettings)  # the scratch one `rehearse` made
    store = await open_store(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(settings.transport.path), clock=clock
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds + SLACK_S
    try:
        await engine.plan([source])
        while (due := await store.next_due()) is not None and loop.time() < deadline:
            instant = max(clock.now(), datetime.fromtimestamp(due, UTC))
            await asyncio.sleep(min((instant - clock.now()).total_seconds() / speed, seconds))
            clock.set(instant)
            await engine.step()
    finally:
        await engine.close()
        await store.close()


async def _timeline(settings: Settings, event: Event, outbox: Outbox) -> list[MailTimeline]:
    store = await open_store(settings.paths.database)
    try:
        counts = {c.mail: c.counts for c in await store.mail_counts(event.id)}
    finally:
        await store.close()
    return timeline_of(event, outbox.renderer, counts)


def timeline_of(
    event: Event, renderer: Renderer, counts: Mapping[str, Mapping[str, int]]
) -> list[MailTimeline]:
    """Each mail in due order: to whom, in which languages, with what, and `counts` (per mail
    and state) as it stands. The rehearsal's report, and the organisers' timeline page."""
    timeline = []
    for mail in sorted(event.mails, key=lambda m: m.due):
        recipients = event.recipients_of(mail)
        languages = Counter(renderer.language_for(event, mail, r) for r in recipients)
        attachments = tuple(p.name for p in mail.attach) + (
            (f"{event.id}.ics",) if mail.calendar else ()
        )
        states = {str(k): v for k, v in counts.get(mail.name, {}).items() if v}
        timeline.append(
            MailTimeline(mail.due, mail.name, mail.to, dict(languages), attachments, states)
        )
    return timeline
