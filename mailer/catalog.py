"""The events in force: event files in, last valid versions kept, deliveries planned.

At start every event file is read and planned; on hot reload only the files that changed.
A file is judged valid or not as `mailer check` judges it (`reading.judge`). A valid version
is planned into the store and kept there (file text and CSV), so that while the file on disk
is invalid, across restarts too, the last valid version stays in force. Reading and planning
an event (200,000 recipients take seconds) run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mailer.clock import Clock
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.events import Event, EventDefaults, Mail, Recipient, event_id_of
from mailer.outbox import Outbox
from mailer.reading import Reading, judge, plan_digest, read_ahead, readers, reading_of
from mailer.sources import Loaded, defaults_for, find_event_files, load_stored, peek_digest
from mailer.store import PLAN_IN_THREAD_FROM, EventRow, Store, Version

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
        self._pauses = 0  # reloads and parses under way with the cyclic collector paused
        self._collector_was_on = True

    @property
    def in_force(self) -> int:
        return len(self.events) + len(self._unparsed)

    async def event(self, event_id: str) -> Event | None:
        """The version in force of an event, parsed now if it was left unparsed."""
        async with self._parsing:
            source = self._unparsed.pop(event_id, None)
            if source is not None:
                with self._collector_paused():
                    loaded = await self._judge(source)
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
            loaded = await self._judge(source)
            if loaded.event is None:
                await self.keep_last_valid(loaded)
                return None
            reading = await asyncio.to_thread(reading_of, loaded, self.settings)
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

    async def _judge(self, source: Path) -> Loaded:
        return await asyncio.to_thread(judge, source, self.settings)

    async def sync(
        self, sources: Iterable[Path], *, all_sources: bool = False, settle_s: float = 0.0
    ) -> None:
        """Bring the named event files (all of them at start) into force: valid versions are
        planned, invalid ones keep the last valid version, vanished ones are cancelled.

        With `settle_s` (hot reload), a file that looks deleted or invalid is read once more
        after that pause: an editor mid-save or a copy in progress is not a deletion or an
        error, and nothing is cancelled on its account.
        """
        with self._collector_paused():
            await self._sync(sources, all_sources=all_sources, settle_s=settle_s)

    async def _sync(self, sources: Iterable[Path], *, all_sources: bool, settle_s: float) -> None:
        stored = await self.store.events()
        loaded = {source: await self._judge(source) for source in sources}
        doubtful = [source for source, item in loaded.items() if item.event is None]
        if settle_s and doubtful:
            await asyncio.sleep(settle_s)
            for source in doubtful:
                loaded[source] = await self._judge(source)
        seen = {item.id for item in loaded.values()}
        for source in list(loaded):
            item = loaded.pop(source)  # let go once done: one big event in memory at a time
            known = item.id in self.events or item.id in self._unparsed or item.id in stored
            version = None
            if item.event is not None:
                item, version = await self._settled(item, stored.get(item.id), settle_s=settle_s)
            if version is not None:
                await self._bring_in(item, version)
            elif not source.exists():
                if known:
                    await self.remove(item.id)
            else:
                await self.keep_last_valid(item)
        if all_sources:
            for event_id, row in stored.items():
                if event_id not in seen and not row.removed:
                    await self.remove(event_id)

    async def _settled(
        self, loaded: Loaded, stored: EventRow | None, *, settle_s: float
    ) -> tuple[Loaded, Version | None]:
        """A valid file's version and plan, or (the file as read again, None) if it turned
        invalid. With `settle_s`, a plan that cancels deliveries may come from a file cut off
        mid-write that still parses (fewer recipients): it is read again after a pause and
        the newer reading taken, unless that is invalid: then the last valid version stays."""
        version = await self._version(loaded, stored)
        if not (settle_s and version.plan is not None and version.plan.cancels):
            return loaded, version
        await asyncio.sleep(settle_s)
        again = await self._judge(loaded.source)
        if again.digest == loaded.digest:
            return loaded, version
        del version  # a big event's plan is not held twice
        return again, (await self._version(again, stored) if again.event is not None else None)

    async def apply(self, loaded: Loaded, *, stored: EventRow | None) -> None:
        """Bring a valid version into force: plan it, save it, hold it."""
        await self._bring_in(loaded, await self._version(loaded, stored))

    async def _version(self, loaded: Loaded, stored: EventRow | None) -> Version:
        """A valid version with the plan it takes (`stored`: the row of the version stored,
        None for a new event), worked out in threads if it is big: for 200,000 recipients
        that is seconds of work, during which the loop goes on sending."""
        event = loaded.event
        assert event is not None
        if len(event.recipients) * len(event.mails) < PLAN_IN_THREAD_FROM:
            return await self._planned(reading_of(loaded, self.settings), stored)
        reading = await asyncio.to_thread(reading_of, loaded, self.settings)
        return await self._planned(reading, stored)

    async def _bring_in(self, loaded: Loaded, version: Version) -> None:
        """Put a planned version in force. It stays parsed only if the version before it
        was (its mails are being sent): else it is parsed again when a mail falls due, as
        after a start, so that re-planning a big event leaves nothing of it in memory."""
        assert loaded.event is not None
        if loaded.id in self.events:
            self._keep(loaded.event)
        else:
            self._unparsed[loaded.id] = loaded.source
        self.outbox.forget(loaded.id)
        await self._save([version])

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
                    await asyncio.to_thread(
                        load_stored,
                        loaded.source,
                        toml=texts[0],
                        csv_text=texts[1],
                        defaults=self._defaults,
                    )
                )
            except MailerError as exc:
                log.error("%s: the last valid version no longer loads: %s", loaded.id, exc)

    async def remove(self, event_id: str) -> None:
        cancelled = await self.store.remove_event(event_id, now=self._now())
        self.events.pop(event_id, None)
        self._unparsed.pop(event_id, None)
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
