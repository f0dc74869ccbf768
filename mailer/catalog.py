"""The events in force: event files in, last valid versions kept, deliveries planned.

At start every event file is read and planned; on hot reload only the files that changed.
A valid version is planned into the store and kept there (file text and CSV), so that while
the file on disk is invalid, across restarts too, the last valid version stays in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from mailer.clock import Clock
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.events import Event, EventDefaults, Mail, Recipient, event_id_of
from mailer.outbox import Outbox
from mailer.plan import wanted_deliveries
from mailer.reading import Reading, plan_digest, read_ahead, readers, reading_of
from mailer.sources import (
    Loaded,
    defaults_for,
    find_event_files,
    load_event,
    load_stored,
    peek_digest,
)
from mailer.store import EventRow, Store, Version

log = logging.getLogger("mailer")

# A file that vanished, fails to parse or would cancel deliveries during hot reload is read
# again after this pause: long enough for an editor's save or a copy to finish, short enough
# to reload within a second.
SETTLE_S = 0.3
# Parsed events held at once (a 200-recipient event is ~80 KB parsed). Deliveries are claimed
# in due order and id order, so those of one event come together: a few suffice.
MAX_PARSED = 16
# At start, plans are saved in batches of about this many deliveries (one transaction each).
BATCH_DELIVERIES = 10_000


class Catalog:
    """Which version of each event is in force, and its plan in the store."""

    def __init__(self, settings: Settings, *, store: Store, outbox: Outbox, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.events: OrderedDict[str, Event] = OrderedDict()  # in force, parsed; LRU order
        # In force, planned, but not parsed: parsed again when one of its mails is due.
        self._unparsed: dict[str, Path] = {}
        self._parsing = asyncio.Lock()

    @property
    def in_force(self) -> int:
        return len(self.events) + len(self._unparsed)

    async def event(self, event_id: str) -> Event | None:
        """The version in force of an event, parsed now if it was left unparsed."""
        async with self._parsing:
            source = self._unparsed.pop(event_id, None)
            if source is not None:
                loaded = await asyncio.to_thread(load_event, source, defaults=self._defaults)
                if loaded.event is not None:
                    self._keep(loaded.event)
                else:  # changed under us and invalid now: the last valid version holds
                    await self.keep_last_valid(loaded)
        if event_id in self.events:
            self.events.move_to_end(event_id)
        return self.events.get(event_id)

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

    async def find(
        self, event_id: str, mail_name: str, recipient_key: str
    ) -> tuple[Event, Mail, Recipient] | None:
        """The event, mail and person a delivery is for, if the version in force has them."""
        event = await self.event(event_id)
        mail = event and next((m for m in event.mails if m.name == mail_name), None)
        recipient = event and event.by_key.get(recipient_key)
        if event is None or mail is None or recipient is None or not event.gets(recipient, mail):
            return None
        return event, mail, recipient

    async def load_all(self) -> None:
        """Rebuild the plan from the event files and the database (SPEC §5.1).

        None kept parsed: an event whose files are unchanged since they were planned is not
        parsed at all, and one planned now is dropped after; each is parsed again when one
        of its mails is due. A thousand events then cost their plans, not a thousand
        recipient lists in memory, and a restart reads little.

        The files to read are read a few ahead of the one being planned, by worker processes
        when there are many (reading is most of the work, and one interpreter runs on one
        core), and plans are saved in batches, one transaction each.
        """
        sources = await asyncio.to_thread(find_event_files, self.settings.paths.schedules)
        stored = await self.store.events()
        unchanged = await asyncio.to_thread(self._unchanged, sources, stored)
        self._unparsed.update((event_id_of(source), source) for source in unchanged)
        changed = [source for source in sources if source not in unchanged]
        batch: list[Version] = []
        with readers(len(changed)) as executor:
            async with asyncio.TaskGroup() as tasks:
                saving: asyncio.Task[None] | None = None
                async for source, reading in read_ahead(changed, self.settings, executor):
                    await asyncio.sleep(0)  # readings come ready: due mail may go in between
                    version = await self._start_plan(source, reading, stored)
                    batch += [version] if version else []
                    if sum(v.plan.size for v in batch if v.plan) >= BATCH_DELIVERIES:
                        if saving is not None:  # one batch is saved while the next fills
                            await saving
                        saving = tasks.create_task(self._save(batch))
                        batch = []
                if batch:
                    tasks.create_task(self._save(batch))
        seen = {event_id_of(source) for source in sources}
        for event_id, row in stored.items():
            if event_id not in seen and not row.removed:
                await self.remove(event_id)

    async def _start_plan(
        self, source: Path, reading: Reading | None, stored: dict[str, EventRow]
    ) -> Version | None:
        """A file read at start, planned (and left unparsed); None if it is invalid."""
        if reading is None:  # invalid: read here again, to log and keep why
            loaded = await asyncio.to_thread(load_event, source, defaults=self._defaults)
            if loaded.event is None:
                await self.keep_last_valid(loaded)
                return None
            reading = reading_of(loaded, self.settings)
        event_id = reading.version.event_id
        self._unparsed[event_id] = source
        return await self._planned(reading, stored.get(event_id))

    def _unchanged(self, sources: list[Path], stored: dict[str, EventRow]) -> set[Path]:
        """The event files whose version in force is the one planned last (a quick look)."""
        unchanged = set()
        for source in sources:
            row = stored.get(event_id_of(source))
            if row is not None and row.error is None and row.digest is not None:
                digest = peek_digest(source)
                if digest is not None and plan_digest(digest, self.settings) == row.digest:
                    unchanged.add(source)
        return unchanged

    @property
    def _defaults(self) -> EventDefaults:
        return defaults_for(self.settings)

    async def sync(
        self, sources: Iterable[Path], *, all_sources: bool = False, settle_s: float = 0.0
    ) -> None:
        """Bring the named event files (all of them at start) into force: valid versions are
        planned, invalid ones keep the last valid version, vanished ones are cancelled.

        With `settle_s` (hot reload), a file that looks deleted or invalid is read once more
        after that pause: an editor mid-save or a copy in progress is not a deletion or an
        error, and nothing is cancelled on its account.
        """
        defaults = defaults_for(self.settings)
        stored = await self.store.events()
        loaded = {s: await asyncio.to_thread(load_event, s, defaults=defaults) for s in sources}
        doubtful = [source for source, item in loaded.items() if item.event is None]
        if settle_s and doubtful:
            await asyncio.sleep(settle_s)
            for source in doubtful:
                loaded[source] = await asyncio.to_thread(load_event, source, defaults=defaults)
        for source, item in loaded.items():
            known = item.id in self.events or item.id in self._unparsed or item.id in stored
            if settle_s and item.event is not None and await self._would_cancel(item):
                item = await self._settled(item, settle_s=settle_s, defaults=defaults)
            if item.event is not None:
                await self.apply(item, stored=stored.get(item.id))
            elif not source.exists():
                if known:
                    await self.remove(item.id)
            else:
                await self.keep_last_valid(item)
        if all_sources:
            for event_id, row in stored.items():
                if event_id not in {item.id for item in loaded.values()} and not row.removed:
                    await self.remove(event_id)

    async def _would_cancel(self, loaded: Loaded) -> bool:
        assert loaded.event is not None
        wanted = wanted_deliveries(loaded.event, domain=self.settings.sender.message_id_domain)
        return bool((await self.store.plan(loaded.id, wanted)).cancels)

    async def _settled(self, loaded: Loaded, *, settle_s: float, defaults: EventDefaults) -> Loaded:
        """A version that cancels deliveries may be a file cut off mid-write that still parses
        (fewer recipients): read it again after a pause and take the newer reading, unless it
        has meanwhile become invalid, in which case the last valid version stays in force."""
        await asyncio.sleep(settle_s)
        again = await asyncio.to_thread(load_event, loaded.source, defaults=defaults)
        return again if again.digest != loaded.digest else loaded

    async def apply(self, loaded: Loaded, *, stored: EventRow | None) -> None:
        """Bring a valid version into force: keep it parsed, plan it, save both."""
        await self._save([await self._version(loaded, stored)])

    async def _version(self, loaded: Loaded, stored: EventRow | None) -> Version:
        """A valid version kept parsed, with the plan it takes (`stored`: the row of the
        version stored, None for a new event)."""
        assert loaded.event is not None
        self._keep(loaded.event)
        self.outbox.forget(loaded.id)
        return await self._planned(reading_of(loaded, self.settings), stored)

    async def _planned(self, reading: Reading, stored: EventRow | None) -> Version:
        """The version with the plan it takes, unless it plans as the version stored."""
        version = reading.version
        if stored is not None and stored.error is not None:  # its error was logged: so is this
            log.info("%s: valid again, this version is now in force", version.event_id)
        if stored is not None and stored.digest == version.digest:
            return version
        plan = await self.store.plan(
            version.event_id, reading.wanted, stored_before=stored is not None
        )
        return dataclasses.replace(version, plan=plan)

    async def _save(self, versions: list[Version]) -> None:
        await self.store.save_valid(versions, now=self._now())
        for version in versions:
            if version.plan is not None and not version.plan.is_empty:
                log.info("%s: plan updated: %s", version.event_id, version.plan.summary())

    async def keep_last_valid(self, loaded: Loaded) -> None:
        """SPEC §5.2: an invalid file changes nothing; the last valid version stays in force."""
        for problem in str(loaded.error).splitlines():  # one log line per problem
            log.error("%s", problem)
        await self.store.save_error(
            loaded.id, source=str(loaded.source), error=str(loaded.error), now=self._now()
        )
        texts = await self.store.last_valid(loaded.id) if loaded.id not in self.events else None
        self._unparsed.pop(loaded.id, None)
        if texts is not None:
            try:
                self._keep(
                    load_stored(
                        loaded.source, toml=texts[0], csv_text=texts[1], defaults=self._defaults
                    )
                )
            except MailerError as exc:
                log.error("%s: the last valid version no longer loads: %s", loaded.id, exc)

    async def remove(self, event_id: str) -> None:
        cancelled = await self.store.remove_event(event_id, now=self._now())
        self.events.pop(event_id, None)
        self._unparsed.pop(event_id, None)
        log.info("%s: event file removed; %d undelivered deliveries cancelled", event_id, cancelled)

    def _now(self) -> float:
        return self.clock.now().timestamp()
