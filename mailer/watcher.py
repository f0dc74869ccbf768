"""schedules/ changes -> the event files to re-plan, through watchfiles.

The folder is watched, not single files: an editor that saves by writing a temporary file
and renaming it would end a single-file watch with a lone "deleted" (watchfiles #235).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from watchfiles import awatch

from mailer.sources import as_typed, is_ignored

# watchfiles yields a batch once the folder has been quiet this long (ms)...
QUIET_MS = 50
# ...or after this long at the most while changes keep coming (ms), so that a folder copied
# file by file is seen as one change, and a reload still lands within a second.
DEBOUNCE_MS = 400


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
    schedules: Path, on_change: Callable[[set[Path]], Awaitable[None]], *, stop: asyncio.Event
) -> None:
    """Call `on_change` with the event files touched by each batch of changes, until `stop`."""
    root = schedules.resolve()
    async for changes in awatch(
        root, stop_event=stop, step=QUIET_MS, debounce=DEBOUNCE_MS, recursive=True
    ):
        sources = event_sources((path for _, path in changes), root)
        if sources:
            await on_change(sources)
