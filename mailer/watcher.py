"""schedules/ changes -> the event files to re-plan, through watchfiles; a watch that fails
is logged and started again, never silently gone.

The folder is watched, not single files: an editor that saves by writing a temporary file
and renaming it would end a single-file watch with a lone "deleted" (watchfiles #235).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from watchfiles import awatch

from mailer.sources import as_typed, find_event_files, is_ignored

log = logging.getLogger("mailer")

# watchfiles yields a batch once the folder has been quiet this long (ms)...
QUIET_MS = 50
# ...or after this long at the most while changes keep coming (ms), so that a folder copied
# file by file is seen as one change, and a reload still lands within a second.
DEBOUNCE_MS = 400
# How often a quiet watch checks that its folder is still the one it watches (ms): a folder
# removed and made again (restored from a backup) leaves inotify watching nothing, silently.
CHECK_MS = 1000
# After a failure the watch starts again after this pause, doubled for each failure in a row
# up to RESTART_MAX_S: quick after a hiccup, and no busy loop while the fault lasts.
RESTART_PAUSE_S = 1.0
RESTART_MAX_S = 30.0


def event_source_of(path: Path, schedules: Path) -> Path | None:
    """The event file a changed path belongs to, or None for a path no event cares about.

    `schedules/<id>.toml` is its own event; anything inside `schedules/<id>/` (the event file,
    its CSV, an attachment) belongs to `schedules/<id>/event.toml`.
    """
    try:
        parts = path.relative_to(schedules).parts
    except ValueError:
        return None
    if not parts or any(is_ignored(Path(part)) for part in parts):
        return None
    if len(parts) == 1 and parts[0].endswith(".toml"):
        return as_typed(schedules / parts[0])
    return as_typed(schedules / parts[0] / "event.toml")


def event_sources(changed: Iterable[str], schedules: Path) -> set[Path]:
    return {s for p in changed if (s := event_source_of(Path(p), schedules)) is not None}


async def watch(
    schedules: Path,
    on_change: Callable[[set[Path]], Awaitable[None]],
    *,
    stop: asyncio.Event,
    pause_s: float = RESTART_PAUSE_S,
) -> None:
    """Call `on_change` with the event files touched by each batch of changes, until `stop`.

    Supervised: when the watch or `on_change` raises, or the folder is removed, it is logged
    (once per reason, not once per try) and started again after a pause. Changes made while
    it was down are not lost: once it runs again, every event file in the folder, and those
    of a batch that failed, are handed to `on_change`.
    """
    root = schedules.resolve()
    pending: set[Path] = set()
    said: str | None = None
    failures = 0
    while not stop.is_set():
        try:
            if failures and not root.is_dir():
                raise FileNotFoundError(f"the folder {root} is gone; waiting for it to come back")
            await _follow(root, on_change, stop=stop, pending=pending, catch_up=failures > 0)
            if stop.is_set():
                return
            reason = f"the folder {root} was removed or replaced"
        except Exception as exc:  # a fault ends this watch, never hot reload for good
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if said is not None:
                log.info("watching %s for changes again", root)
        if reason != said:
            log.error("hot reload stopped (%s); watching %s again shortly", reason, root)
            said = reason
        failures += 1
        await _pause(stop, min(pause_s * 2 ** (failures - 1), RESTART_MAX_S))


async def _follow(
    root: Path,
    on_change: Callable[[set[Path]], Awaitable[None]],
    *,
    stop: asyncio.Event,
    pending: set[Path],
    catch_up: bool,
) -> None:
    """One watch of `root`, until `stop` or until `root` is no longer the folder it was.

    `pending` keeps the files of a batch until `on_change` has taken them; with `catch_up`,
    every event file is added once the watch is running, for what changed while none was.
    """
    identity = _identity(root)
    async for changes in awatch(
        root,
        stop_event=stop,
        step=QUIET_MS,
        debounce=DEBOUNCE_MS,
        rust_timeout=CHECK_MS,
        yield_on_timeout=True,
        recursive=True,
    ):
        if catch_up:
            pending.update(find_event_files(root))
            catch_up = False
        pending.update(event_sources((path for _, path in changes), root))
        if pending:
            batch = set(pending)
            await on_change(batch)
            pending.difference_update(batch)
        if _identity(root) != identity:
            return


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(folder)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


async def _pause(stop: asyncio.Event, delay_s: float) -> None:
    """Sleep `delay_s`, or less if the service stops meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
