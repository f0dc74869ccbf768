"""The events in force, held: which version of each is sent, parsed when one of its mails
is due and dropped again when others are, and where a follower learns of another node's.

Split from `catalog.py` (issue 13): this is what sending asks (`find`, `event`), over the
store's last valid texts; bringing event files in and planning them is `catalog.py`'s, above
it. The version in force is parsed from the database, not the folder (SPEC §9), and at most
MAX_PARSED events stay parsed, so memory stays bounded however many events send mail.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailer.clock import Clock
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.events import Event, Mail, Recipient
from mailer.notices import NOTICES, notice_mail
from mailer.outbox import Outbox
from mailer.reading import judge
from mailer.sources import defaults_for, load_stored
from mailer.store import Store

log = logging.getLogger("mailer")

# Parsed events held at once (a 200-recipient event is ~80 KB parsed). Deliveries are claimed
# in due order and id order, so those of one event come together: a few suffice.
MAX_PARSED = 16


class InForce:
    """Which version of each event is in force, held parsed or not, and what it sends."""

    def __init__(self, settings: Settings, *, store: Store, outbox: Outbox, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.events: OrderedDict[str, Event] = OrderedDict()  # in force, parsed; LRU order
        # In force, planned, but not parsed: parsed again when one of its mails is due.
        self._unparsed: dict[str, Path] = {}
        self._changed: dict[str, str | None] = {}  # by other nodes: event -> source, None if gone
        self._parsing = asyncio.Lock()
        # A node that does not plan (SPEC §9) follows the versions the planner brings in:
        # the digest of each as it last looked.
        self.following = False
        self._followed: dict[str, str] = {}
        self._pauses = 0  # reloads and parses under way with the cyclic collector paused
        self._collector_was_on = True

    @property
    def in_force(self) -> int:
        return len(self.events) + len(self._unparsed)

    async def event(self, event_id: str) -> Event | None:
        """The version in force of an event, parsed now if it was left unparsed."""
        async with self._parsing:
            self._forget_changed()
            source = self._unparsed.pop(event_id, None)
            if source is None and event_id not in self.events:
                source = await self._planned_elsewhere(event_id)
            if source is not None:
                await self._parse(event_id, source)
        if event_id in self.events:
            self.events.move_to_end(event_id)
        return self.events.get(event_id)

    async def _planned_elsewhere(self, event_id: str) -> Path | None:
        """The file of an event this process never read but the database holds in force:
        planned by another node (SPEC §9), whose version, not this folder's, is sent."""
        row = (await self.store.events()).get(event_id)
        if row is None or row.digest is None or row.removed:
            return None
        return Path(row.source)

    def changed_elsewhere(self, event_id: str, *, source: str | None) -> None:
        """Another node re-planned (or removed) the event: what is held parsed here may be
        an older version, so it is parsed again from the database when next needed. Noted
        now, applied by the next `event()` under the parsing lock: a parse under way when
        the news came would otherwise put the older version back after it."""
        self._changed[event_id] = source

    def _forget_changed(self) -> None:
        for event_id, source in self._changed.items():
            self.events.pop(event_id, None)
            self.outbox.forget(event_id)
            if source is None:  # removed
                self._unparsed.pop(event_id, None)
            else:
                self._unparsed[event_id] = Path(source)
        self._changed.clear()

    async def _parse(self, event_id: str, source: Path) -> None:
        """Parse the version in force from its texts in the database, the version that was
        planned, not from the folder, which may hold an edit not yet brought in (SPEC §9:
        never send from a copy of the folder). The file only if the database has no text."""
        texts = await self.store.last_valid(event_id)
        with self._collector_paused():
            if texts is not None:
                try:
                    self._keep(await asyncio.to_thread(self._stored, source, *texts))
                    self.outbox.use_files(event_id, await self.store.event_files(event_id))
                    return
                except MailerError as exc:
                    log.error("%s: the version in force no longer loads: %s", event_id, exc)
            loaded = await asyncio.to_thread(judge, source, self.settings)
        if loaded.event is not None:
            self._keep(loaded.event)
            self.outbox.use_files(loaded.id, loaded.files)
        else:  # changed under us and invalid now: the last valid version holds
            await self._keep_last_valid(loaded.id, source=loaded.source, error=str(loaded.error))

    def _stored(self, source: Path, toml: str, csv_text: str | None) -> Event:
        defaults = defaults_for(self.settings)
        return load_stored(source, toml=toml, csv_text=csv_text, defaults=defaults)

    def _keep(self, event: Event) -> None:
        """Hold an event parsed, and let the least recently used beyond MAX_PARSED go back to
        unparsed (parsed again when next needed): memory stays bounded however many events
        send mail over the months, while the few sending now stay at hand."""
        self.events[event.id] = event
        self.events.move_to_end(event.id)
        self._unparsed.pop(event.id, None)
        while len(self.events) > MAX_PARSED:
            _, oldest = self.events.popitem(last=False)
            self._unparsed[oldest.id] = oldest.source
            self.outbox.forget(oldest.id)

    async def find(
        self, event_id: str, mail_name: str, recipient_key: str
    ) -> tuple[Event, Mail, Recipient] | None:
        """The event, mail and person a delivery is for, if the version in force has them.
        A node that follows another's plan looks at the database once more before saying
        no: the delivery may be of a version brought in since it last looked."""
        found = _found(await self.event(event_id), mail_name, recipient_key)
        if found is None and self.following:
            await self.follow(only=event_id)
            found = _found(await self.event(event_id), mail_name, recipient_key)
        return found

    async def follow(self, *, only: str | None = None) -> None:
        """For a node that does not plan: an event whose version in force changed since it
        last looked is parsed again from the database when next needed, as a note from the
        planner would have it (`changed_elsewhere`). The fallback for a note missed while
        the listener was down, and for a delivery claimed before its note arrived."""
        self.following = True
        for event_id, row in (await self.store.events()).items():
            if row.digest is None or only not in (None, event_id):
                continue
            if self._followed.get(event_id) != row.digest:
                self._followed[event_id] = row.digest
                self.changed_elsewhere(event_id, source=None if row.removed else row.source)

    def lead(self) -> None:
        """This node plans now: what it loads is the plan, nothing to follow."""
        self.following = False
        self._followed.clear()

    async def _keep_last_valid(self, event_id: str, *, source: Path, error: str) -> None:
        """SPEC §5.2: an invalid file changes nothing; the last valid version stays in force."""
        for problem in error.splitlines():  # one log line per problem
            log.error("%s", problem)
        await self.store.save_error(event_id, source=str(source), error=error, now=self._now())
        texts = await self.store.last_valid(event_id) if event_id not in self.events else None
        self._unparsed.pop(event_id, None)
        if texts is not None:
            try:
                self._keep(
                    await asyncio.to_thread(
                        load_stored,
                        source,
                        toml=texts[0],
                        csv_text=texts[1],
                        defaults=defaults_for(self.settings),
                    )
                )
                self.outbox.use_files(event_id, await self.store.event_files(event_id))
            except MailerError as exc:
                log.error("%s: the last valid version no longer loads: %s", event_id, exc)

    async def remove(self, event_id: str) -> None:
        cancelled = await self.store.remove_event(event_id, now=self._now())
        self.events.pop(event_id, None)
        self._unparsed.pop(event_id, None)
        self.outbox.forget(event_id)
        log.info("%s: event file removed; %d undelivered deliveries cancelled", event_id, cancelled)

    @contextmanager
    def _collector_paused(self) -> Iterator[None]:
        """The cyclic garbage collector off while event files are read and planned in
        threads. A full collection walks every live object, holding the GIL and so the
        loop: with a 200,000-recipient event's million objects alive it held due mail for
        ~450 ms, several times per reload. Reference counting frees nearly all of it; the
        few cycles made meanwhile wait for the first collection after."""
        if self._pauses == 0:
            self._collector_was_on = gc.isenabled()
            gc.disable()
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            if self._pauses == 0 and self._collector_was_on:
                gc.enable()

    def _now(self) -> float:
        return self.clock.now().timestamp()


def _found(
    event: Event | None, mail_name: str, recipient_key: str
) -> tuple[Event, Mail, Recipient] | None:
    if event is None:
        return None
    mail = next((m for m in event.mails if m.name == mail_name), None)
    if mail_name in NOTICES:  # made for its round when it is composed (announcing.py)
        mail = notice_mail(event, mail_name, changes=(), calendar=False)
    recipient = event.by_key.get(recipient_key)
    if mail is None or recipient is None or not event.gets(recipient, mail):
        return None
    return event, mail, recipient
