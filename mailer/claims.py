"""The deliveries one step of sending has claimed, and their leases.

Split from `sending.py` (issue 13): its sessions take deliveries from here one at a time,
and a batch is claimed when none is left, so a crash leaves little to put back in the queue.
While claims are held their leases are renewed; a claim held past its lease may be another
node's now and goes back to the queue unsent (SPEC §9).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import Protocol

from mailer.store import Claimed, Narrow, Store, StoreUnavailable

log = logging.getLogger("mailer")

# How many due deliveries one claim takes: enough to keep every session busy between two
# claims, few enough that a crash leaves little to put back in the queue.
CLAIM_BATCH = 100


class Claimant(Protocol):
    """What the claims ask of the sender that holds them (`sending.Sender`)."""

    store: Store
    heartbeat_s: float

    def may_go_on(self) -> bool: ...

    def now(self) -> float: ...


class Claims:
    """The deliveries one step has claimed, taken by its sessions one at a time."""

    def __init__(self, sender: Claimant, *, only: Narrow | None, due_by: float | None) -> None:
        self.waiting: deque[Claimed] = deque()
        self._lock = asyncio.Lock()
        self._sender = sender
        self._only = only
        self._due_by = due_by
        self.halted = False  # a session failed: the others finish what they hold, then stop
        # When our leases were last known good (loop time): claimed or renewed from then.
        self.held_at = -math.inf

    def has_lapsed(self) -> bool:
        """Whether our leases may have run out: no claim or renewal for a lease's length
        (this process was frozen, or the database away). What is waiting may be another
        node's now: sending it would send it twice (SPEC §9)."""
        lease_s = self._sender.store.node.lease_s
        return asyncio.get_running_loop().time() - self.held_at >= lease_s

    async def take(self) -> Claimed | None:
        """The next delivery, claiming a batch when none is left; None when done or halted."""
        sender = self._sender
        async with self._lock:
            if self.waiting and self.has_lapsed():
                lapsed = [c.id for c in self.waiting]
                self.waiting.clear()
                await sender.store.release(lapsed)  # those still ours; others' stay theirs
                log.warning("%d claims held past their lease go back to the queue", len(lapsed))
            if not self.waiting and sender.may_go_on() and not self.halted:
                self.held_at = asyncio.get_running_loop().time()
                due_by = sender.now() if self._due_by is None else self._due_by
                batch, expired = await sender.store.claim_due(
                    due_by, limit=CLAIM_BATCH, only=self._only
                )
                if batch and self._due_by is not None:
                    # Leased from `due_by`, which a long pass leaves behind: renewed from
                    # now at once, or another process would take them back as abandoned.
                    await sender.store.renew_leases(sender.now())
                if expired:
                    log.warning("%d deliveries expired before they could be sent", expired)
                self.waiting.extend(batch)
            going_on = sender.may_go_on() and not self.halted
            return self.waiting.popleft() if self.waiting and going_on else None

    async def renew_leases(self) -> None:
        """While a step holds claims: renew their leases, so that no other process takes
        them back as a stopped one's. A renewal the store fails is tried at the next beat
        (the step's own store calls say what is wrong); one after the leases may have run
        out keeps what is still ours, but cannot vouch for what waits (`has_lapsed`)."""
        while True:
            await asyncio.sleep(self._sender.heartbeat_s)
            started = asyncio.get_running_loop().time()
            lapsed = self.has_lapsed()
            try:
                await self._sender.store.renew_leases(self._sender.now())
            except (StoreUnavailable, OSError):
                continue
            if not lapsed:
                self.held_at = started
