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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

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
    if len(parts) == 1:  # a single-file event, or a file beside them (see event_sources)
        return as_typed(schedules / parts[0]) if parts[0].endswith(".toml") else None
    return as_typed(schedules / parts[0] / "event.toml")


def event_sources(changed: Iterable[str], schedules: Path) -> set[Path]:
    """The event files the changed paths belong to. A file lying beside the single-file
    events (`schedules/deltagare.csv`) may be any of theirs: each of them is read again. A
    new folder is its own event: files written into it before inotify watches it are
    reported as the folder alone."""
    found: set[Path] = set()
    for name in changed:
        path = Path(name)
        if path.parent == schedules and path.is_dir() and not is_ignored(path):
            found.add(as_typed(path / "event.toml"))
        elif path.parent == schedules and path.suffix != ".toml" and not is_ignored(path):
            found.update(_single_file_events(schedules))
        elif (source := event_source_of(path, schedules)) is not None:
            found.add(source)
    return found


def _single_file_events(schedules: Path) -> list[Path]:
    return [as_typed(p) for p in schedules.glob("*.toml") if not is_ignored(p)]


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
    health = _Health(root)
    while not stop.is_set():
        try:
            if health.failures and not root.is_dir():
                raise FileNotFoundError("the folder is gone; waiting for it to come back")
            await _follow(root, on_change, stop=stop, pending=pending, health=health)
            if stop.is_set():
                return
            health.failed("the folder was removed or replaced")
        except Exception as exc:  # a fault ends this watch, never hot reload for good
            health.failed(f"{type(exc).__name__}: {exc}")
        await _pause(stop, min(pause_s * 2 ** (health.failures - 1), RESTART_MAX_S))


@dataclass
class _Health:
    """The watch's failures in a row, and what was said of them: each kind once, until the
    watch runs again (a store that stays full is one line, not one a try)."""

    root: Path
    said: str | None = None
    failures: int = 0

    def failed(self, reason: str) -> None:
        if reason != self.said:
            log.error("hot reload of %s stopped (%s); trying again shortly", self.root, reason)
            self.said = reason
        self.failures += 1

    def running(self) -> None:
        if self.said is not None:
            log.info("hot reload of %s works again", self.root)
        self.said, self.failures = None, 0


async def _follow(
    root: Path,
    on_change: Callable[[set[Path]], Awaitable[None]],
    *,
    stop: asyncio.Event,
    pending: set[Path],
    health: _Health,
) -> None:
    """One watch of `root`, until `stop` or until `root` is no longer the folder it was.

    `pending` keeps the files of a batch until `on_change` has taken them. After a failure,
    every event file is added once the watch runs, for what changed while none did.
    """
    identity = _identity(root)
    async for changes in _batches(root, stop):
        if health.failures:
            pending.update(find_event_files(root))
        pending.update(event_sources((path for _, path in changes), root))
        if pending:
            batch = set(pending)
            await on_change(batch)
            pending.difference_update(batch)
        if health.failures:
            health.running()
        if _identity(root) != identity:
            return


async def _batches(
    root: Path, stop: asyncio.Event
) -> AsyncIterator[set[tuple[watchfiles.Change, str]]]:
    """watchfiles' `watch`, each batch waited for in a thread, until `stop`. Its `awatch`
    sets up the watches (one per folder) on the event loop: 50-160 ms with 1,000 event
    folders, a stall that held due mail at every start and every restart of the watch."""
    batches = watchfiles.watch(
        root,
        stop_event=stop,  # read from the thread: is_set() only
        step=QUIET_MS,
        debounce=DEBOUNCE_MS,
        rust_timeout=CHECK_MS,
        yield_on_timeout=True,
        recursive=True,
        raise_interrupt=False,
    )
    try:
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            yield batch
    finally:
        # Cancelled while a thread is inside `watch`: it ends within CHECK_MS, and the
        # generator (and its watches) goes with the garbage.
        with contextlib.suppress(ValueError):
            batches.close()


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
