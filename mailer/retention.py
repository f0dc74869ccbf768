"""SPEC §13: participants' personal data erased `retention.keep` after their event's end (or
its deletion): by `mailer purge` at once, and by the running service once a day."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailer.clock import Clock
from mailer.config import Settings
from mailer.secret import load_keyring
from mailer.store import Purged, Store
from mailer.timing import written_duration

log = logging.getLogger("mailer")

# SPEC §13: "the running service purges once a day". The first purge comes a minute after
# the start, not at once: a start is busy enough, and a crash loop should not purge in a loop.
PURGE_EVERY_S = 86400.0
FIRST_PURGE_AFTER_S = 60.0


async def purge_due(
    settings: Settings, store: Store, *, clock: Clock, dry_run: bool = False
) -> Purged:
    """Erase (or, dry, count) what is due now; nothing with `keep = ""`."""
    keep = settings.retention.keep
    if keep is None:
        return Purged((), 0, 0)
    keyring = await load_keyring(settings, store)
    return await store.purge(
        now=clock.now().timestamp(),
        keep_s=keep.total_seconds(),
        erase=keyring.erased,
        dry_run=dry_run,
    )


async def purge_daily(
    settings: Settings,
    store: Store,
    *,
    clock: Clock,
    stopping: asyncio.Event,
    first_after_s: float = FIRST_PURGE_AFTER_S,
    every_s: float = PURGE_EVERY_S,
) -> None:
    """The service's purge, once a day until stopped; a failed one is logged and the next
    day's tries again (the data stays one more day, nothing is lost)."""
    wait_s = first_after_s
    while settings.retention.keep is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=wait_s)
        if stopping.is_set():
            return
        wait_s = every_s
        try:
            purged = await purge_due(settings, store, clock=clock)
        except Exception as exc:  # whatever failed: said, and tried again tomorrow
            log.error("personal data: the daily purge failed: %s", exc)
            continue
        if purged.events:
            log.info(
                "personal data erased (%s after the end): %d event(s), %d deliveries, %d bytes: %s",
                written_duration(settings.retention.keep),
                len(purged.events),
                purged.deliveries,
                purged.bytes,
                ", ".join(purged.events),
            )
