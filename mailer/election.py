"""Which node plans, and the node's heartbeat (SPEC §9: one planner at a time, every node
sends).

The store says who the planner is (`Store.hold_planner`: on PostgreSQL an advisory lock,
on SQLite always this node). The planner alone reads and watches `schedules/` and changes
the plan; the others follow the versions in force from the database. A node that does not
plan asks again every ELECTION_S, and the one that gets the lock reads the whole folder
afresh (it may have changed while nobody watched) before it watches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailer.catalog import Catalog
from mailer.clock import Clock
from mailer.store import Store, StoreUnavailable
from mailer.watcher import watch

log = logging.getLogger("mailer")

# How often a node that does not plan asks for the planner's lock: a planner that died is
# replaced within this, plus the time to read the folder (SPEC §9: within 10 s).
ELECTION_S = 2.0


class Election:
    """This node's part: plan while it holds the lock, follow the plan while it does not,
    and say that it lives (`nodes`) as often as it renews its leases."""

    def __init__(
        self,
        schedules: Path,
        *,
        store: Store,
        catalog: Catalog,
        clock: Clock,
        stopping: asyncio.Event,
        wakeup: asyncio.Event,
        reload: Callable[[set[Path]], Awaitable[None]],
        watch_folder: bool = True,
    ) -> None:
        self.schedules = schedules
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.stopping = stopping
        self.wakeup = wakeup
        self.reload = reload  # hot reload of what the watcher saw change (SPEC §5.2)
        self.watch_folder = watch_folder
        self.is_planner = False
        self._watcher: asyncio.Task[None] | None = None
        self._unwatch = asyncio.Event()
        self._last_beat = -math.inf

    async def start(self) -> None:
        """At start, before the first step: plan if no other node does (reading the whole
        folder), else follow. A store failure here ends the start (the service restarts)."""
        if await self.store.hold_planner():
            await self._take_over()
        else:
            await self.catalog.follow()
        await self._beat(changed=True)

    async def run(self) -> None:
        """Until the service stops: ask for the lock, follow, beat; then leave `nodes`."""
        try:
            while not self.stopping.is_set():
                await _wait(self.stopping, timeout_s=ELECTION_S)
                if not self.stopping.is_set():
                    await self._turn()
        finally:
            await self._stop_watching()
            try:
                await self.store.leave()
            except (StoreUnavailable, OSError) as exc:  # shown as not seen: no harm
                log.info("could not take this node off the list of nodes: %s", exc)

    async def _turn(self) -> None:
        """One round; a store failure costs this round only (sending says what is wrong)."""
        try:
            planner = await self.store.hold_planner()
        except (StoreUnavailable, OSError):
            planner = False
        changed = planner is not self.is_planner
        try:
            if planner and not self.is_planner:
                await self._take_over()
            elif not planner and self.is_planner:
                await self._step_down()
            if not self.is_planner:
                await self.catalog.follow()
            await self._beat(changed=changed)
        except (StoreUnavailable, OSError) as exc:
            log.debug("election round failed: %s", exc)

    async def _take_over(self) -> None:
        """Become the planner: the whole folder read afresh, then watched."""
        self.catalog.lead()
        await self.catalog.load_all()
        self.is_planner = True
        log.info("this node plans: %s read afresh and watched", self.schedules)
        if self.watch_folder:
            self._unwatch = asyncio.Event()
            self._watcher = asyncio.create_task(
                watch(self.schedules, self.reload, stop=self._unwatch)
            )
        self.wakeup.set()

    async def _step_down(self) -> None:
        log.warning(
            "this node no longer plans (its connection to the database ended); "
            "it goes on sending, and another node plans"
        )
        self.is_planner = False
        await self._stop_watching()

    async def _stop_watching(self) -> None:
        self._unwatch.set()
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None

    async def _beat(self, *, changed: bool) -> None:
        """This node's row in `nodes`, as often as leases are renewed, and at once when
        it changed."""
        now = self.clock.now().timestamp()
        if changed or now - self._last_beat >= self.store.node.heartbeat_s:
            await self.store.beat(now, planner=self.is_planner)
            self._last_beat = now


async def _wait(event: asyncio.Event, *, timeout_s: float) -> None:
    """Until `event`, or `timeout_s` on the loop's monotonic clock."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
