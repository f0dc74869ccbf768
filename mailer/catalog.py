"""Event files in, planned, brought into force: last valid versions kept.

The one orchestrator of loading: start-up is a sync of every event file, hot reload a sync of
those that changed, `mailer rehearse` a sync of one. Each file is read (`reading`: judged
valid or not as `mailer check` judges it, by worker processes when there are many), planned
against its stored deliveries (`planning`, pure) and saved (`store.save_valid`). A valid
version is kept in the store (file text, CSV and attachments), so that while the file on
disk is invalid, across restarts too, the last valid version stays in force, and is what is
sent. Reading and planning a big event
(200,000 recipients take seconds) run in threads, never on the event loop. Holding the
versions in force, and parsing them when a mail is due, is `in_force.py`'s (split out,
issue 13).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from mailer.events import event_id_of
from mailer.file_stamps import stamped_digest
from mailer.in_force import InForce
from mailer.keyring import is_erased
from mailer.planning import Reading, is_planned, plan_digest, plan_version
from mailer.reading import Invalid, read_ahead, read_for_plan, readers
from mailer.saving import BatchSaver
from mailer.secret import load_keyring
from mailer.sources import find_event_files, peek_digest
from mailer.store import EventRow, Version

log = logging.getLogger("mailer")

# A file that vanished, fails to parse or would cancel deliveries during hot reload is read
# again after this pause: long enough for an editor's save or a copy to finish, short enough
# to reload within a second.
SETTLE_S = 0.3
# Deliveries (wanted and stored) from which an event is planned in a thread, off the loop:
# 200,000 held the loop, and due mail, for seconds; below this a hop to a thread costs more
# than planning.
PLAN_IN_THREAD_FROM = 2_000


class Catalog(InForce):
    """Which version of each event is in force, and its plan in the store."""

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
        unchanged, stamps = await asyncio.to_thread(self._unchanged, sources, rows)
        if stamps:
            await self.store.save_stamps(stamps)
        self._unparsed.update((event_id_of(source), source) for source in unchanged)
        # The collector stays on: with nothing parsed held, it finds little, and paused for
        # a whole start its first pass after (on the loop) held due mail ~0.1 s.
        await self._sync([s for s in sources if s not in unchanged], rows, settle_s=0.0)
        found = {event_id_of(source) for source in sources}
        for event_id, row in rows.items():
            if event_id not in found and not row.removed:
                await self.remove(event_id)

    def _unchanged(
        self, sources: list[Path], rows: dict[str, EventRow]
    ) -> tuple[set[Path], list[tuple[str, str, str]]]:
        """The event files whose version in force is the one planned last: known by their
        metadata if it is as when they were read (file_stamps.py), else by a quick read.
        And the stamps that read gave: (event, plan digest, stamp), for the next start."""
        unchanged, stamps = set(), []
        for source in sources:
            row = rows.get(event_id_of(source))
            if row is None or row.error is not None or row.digest is None:
                continue
            digest, stamp = stamped_digest(row.stamp, source), None
            if digest is None and (peeked := peek_digest(source)) is not None:
                digest, stamp = peeked
            if digest is not None and is_planned(plan_digest(digest, self.settings), row):
                unchanged.add(source)
                if stamp is not None:
                    stamps.append((row.id, row.digest, stamp))
        return unchanged, stamps

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
        settle_s = self.settings.sending.change_settle.total_seconds()
        await self.store.save_valid(versions, now=self._now(), settle_s=settle_s)
        for version in versions:
            if version.plan is not None and not version.plan.is_empty:
                log.info("%s: plan updated: %s", version.event_id, version.plan.summary())
