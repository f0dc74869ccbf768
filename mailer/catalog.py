"""The events in force: event files in, last valid versions kept, deliveries planned.

The one orchestrator of loading: start-up is a sync of every event file, hot reload a sync of
those that changed, `mailer rehearse` a sync of one. Each file is read (`reading`: judged
valid or not as `mailer check` judges it, by worker processes when there are many), planned
against its stored deliveries (`planning`, pure) and saved (`store.save_valid`). A valid
version is kept in the store (file text, CSV and attachments), so that while the file on
disk is invalid, across restarts too, the last valid version stays in force, and is what is
sent. Reading and planning a big event
(200,000 recipients take seconds) run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mailer.clock import Clock
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.events import Event, Mail, Recipient, event_id_of
from mailer.keyring import is_erased
from mailer.outbox import Outbox
from mailer.planning import Reading, is_planned, plan_digest, plan_version
from mailer.reading import Invalid, judge, read_ahead, read_for_plan, readers
from mailer.saving import BatchSaver
from mailer.secret import load_keyring
from mailer.sources import defaults_for, find_event_files, load_stored, peek_digest
from mailer.store import EventRow, Store, Version

log = logging.getLogger("mailer")

# A file that vanished, fails to parse or would cancel deliveries during hot reload is read
# again after this pause: long enough for an editor's save or a copy to finish, short enough
# to reload within a second.
SETTLE_S = 0.3
# Parsed events held at once (a 200-recipient event is ~80 KB parsed). Deliveries are claimed
# in due order and id order, so those of one event come together: a few suffice.
MAX_PARSED = 16
# Deliveries (wanted and stored) from which an event is planned in a thread, off the loop:
# 200,000 held the loop, and due mail, for seconds; below this a hop to a thread costs more
# than planning.
PLAN_IN_THREAD_FROM = 2_000


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

    async def load_all(self) -> None:
        """Rebuild the plan from the event files and the database (SPEC §5.1): a sync of
        every event file, and the events whose file is gone removed.

        None kept parsed: an event whose files are unchanged since they were planned is not
        read at all, and one planned now is dropped after; each is parsed again when one
        of its mails is due. A thousand events then cost their plans, not a thousand
        recipient lists in memory, and a restart reads little.
        """
        sources = await asyncio.to_thread(find_event_files, self.settings.paths.schedules)
        rows = await self.store.events()
        unchanged = await asyncio.to_thread(self._unchanged, sources, rows)
        self._unparsed.update((event_id_of(source), source) for source in unchanged)
        # The collector stays on: with nothing parsed held, it finds little, and paused for
        # a whole start its first pass after (on the loop) held due mail ~0.1 s.
        await self._sync([s for s in sources if s not in unchanged], rows, settle_s=0.0)
        found = {event_id_of(source) for source in sources}
        for event_id, row in rows.items():
            if event_id not in found and not row.removed:
                await self.remove(event_id)

    def _unchanged(self, sources: list[Path], rows: dict[str, EventRow]) -> set[Path]:
        """The event files whose version in force is the one planned last (a quick look)."""
        unchanged = set()
        for source in sources:
            row = rows.get(event_id_of(source))
            if row is not None and row.error is None:
                digest = peek_digest(source)
                if digest is not None and is_planned(plan_digest(digest, self.settings), row):
                    unchanged.add(source)
        return unchanged

    async def sync(self, sources: Iterable[Path], *, settle_s: float = 0.0) -> None:
        """Bring the named event files into force: valid versions are planned, invalid ones
        keep the last valid version, vanished ones are cancelled.

        With `settle_s` (hot reload), a file that looks deleted or invalid is read once more
        after that pause: an editor mid-save or a copy in progress is not a deletion or an
        error, and nothing is cancelled on its account.
        """
        with self._collector_paused():
            await self._sync(list(sources), await self.store.events(), settle_s=settle_s)

    async def _sync(
        self, sources: list[Path], rows: dict[str, EventRow], *, settle_s: float
    ) -> None:
        """Read the files (a few ahead, by worker processes when there are many: reading is
        most of the work, and one interpreter runs on one core), plan each valid one, and
        save the plans in batches while the next are read."""
        doubtful: list[Reading | Invalid] = []
        async with BatchSaver(self._save) as batches:
            async for read in self._read(sources):  # one big event in memory at a time
                await asyncio.sleep(0)  # readings come ready: due mail may go in between
                if isinstance(read, Invalid):
                    doubtful.append(read)  # decided last, after one pause for all of them
                else:
                    await self._take(read, rows, batches, settle_s=settle_s)
            if settle_s and doubtful:
                await asyncio.sleep(settle_s)
                doubtful = [read async for read in self._read([r.source for r in doubtful])]
            for read in doubtful:
                if isinstance(read, Invalid):
                    await self._refuse(read, known=read.id in rows)
                else:
                    await self._take(read, rows, batches, settle_s=settle_s)

    async def _read(self, sources: list[Path]) -> AsyncIterator[Reading | Invalid]:
        """Each file as read for planning, those of events held parsed with their event."""
        held = frozenset(source for source in sources if event_id_of(source) in self.events)
        with readers(len(sources)) as executor:
            async for _, read in read_ahead(sources, self.settings, executor, keep_events=held):
                yield read

    async def _take(
        self,
        reading: Reading,
        rows: dict[str, EventRow],
        batches: BatchSaver,
        *,
        settle_s: float,
    ) -> None:
        """Plan a valid reading and put it in force (its plan saved with its batch).

        With `settle_s`, a plan that cancels deliveries may come from a file cut off
        mid-write that still parses (fewer recipients): it is read again after a pause and
        the newer reading taken, unless that is invalid: then the last valid version stays."""
        row = rows.get(reading.event_id)
        version = await self._planned(reading, row)
        if settle_s and version.plan is not None and version.plan.cancels:
            await asyncio.sleep(settle_s)
            again = await asyncio.to_thread(
                read_for_plan, reading.source, self.settings, keep_event=reading.event is not None
            )
            if isinstance(again, Invalid):
                await self._refuse(again, known=again.id in rows)
                return
            if again.version.digest != reading.version.digest:
                del version  # a big event's plan is not held twice
                reading, version = again, await self._planned(again, row)
        if row is not None and row.error is not None:  # its error was logged: so is this
            log.info("%s: valid again, this version is now in force", reading.event_id)
        self._hold(reading)
        await batches.add(version)

    async def _planned(self, reading: Reading, row: EventRow | None) -> Version:
        """The version to keep with the plan it takes (none if the stored deliveries already
        follow it), worked out in a thread if it is big: for 200,000 recipients that is
        seconds of work, during which the loop goes on sending."""
        if is_planned(reading.version.digest, row):
            return reading.version
        stored = await self.store.stored_deliveries(reading.event_id) if row is not None else []
        erase = None
        if any(is_erased(s.recipient) for s in stored):  # purged once (SPEC §13)
            erase = (await load_keyring(self.settings, self.store)).erased
        if len(stored) + len(reading.wanted) >= PLAN_IN_THREAD_FROM:
            return await asyncio.to_thread(plan_version, reading, stored, erase=erase)
        return plan_version(reading, stored, erase=erase)

    def _hold(self, reading: Reading) -> None:
        """Put a version in force. It stays parsed only if the version before it was (its
        mails are being sent): else it is parsed again when a mail falls due, as after a
        start, so that re-planning a big event leaves nothing of it in memory."""
        self.outbox.forget(reading.event_id)
        if reading.event is not None and reading.event_id in self.events:
            self._keep(reading.event)
            files = {f.name: f.data for f in reading.version.files}
            self.outbox.use_files(reading.event_id, files)
        else:
            self.events.pop(reading.event_id, None)
            self._unparsed[reading.event_id] = reading.source

    async def _refuse(self, read: Invalid, *, known: bool) -> None:
        """A file that is invalid or gone: gone, its event is removed; invalid, it is not."""
        if read.source.exists():
            await self._keep_last_valid(read.id, source=read.source, error=read.error)
        elif known or read.id in self.events or read.id in self._unparsed:
            await self.remove(read.id)

    async def _save(self, versions: list[Version]) -> None:
        await self.store.save_valid(versions, now=self._now())
        for version in versions:
            if version.plan is not None and not version.plan.is_empty:
                log.info("%s: plan updated: %s", version.event_id, version.plan.summary())

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
    recipient = event.by_key.get(recipient_key)
    if mail is None or recipient is None or not event.gets(recipient, mail):
        return None
    return event, mail, recipient
