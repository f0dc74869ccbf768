"""Event files read for planning, many at once: in worker processes when there are many.

One interpreter runs on one core, and reading (TOML, CSV, addresses, the deliveries each
event wants) is most of a cold start: 1,000 files of 200 recipients took 9.7 s read in the
service, ~4.4 s read by workers while the service saves plans. `read_for_plan` is the one
function that reads a file for planning, in a worker or in the service's own threads, and
`judge` the one that says whether a file is valid: as `mailer check` says (templates too).
What is planned from a reading is `mailer.planning`'s; the catalog orchestrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailer.checking import judge_event
from mailer.config import Settings
from mailer.planning import Reading, read_version
from mailer.reader_server import cores, reader_context
from mailer.render import Renderer
from mailer.sources import Loaded, defaults_for

log = logging.getLogger("mailer")

# Event files are read this many ahead of the one being planned.
READ_AHEAD = 16
# From this many files to read, worker processes read them (one per core, at most this
# many; the service's own share is small): below it, starting them costs more than it saves.
POOL_MIN_EVENTS = 50
MAX_READERS = 4
READER_NICENESS = 10


@dataclass(frozen=True)
class Invalid:
    """An event file judged invalid, as read for planning."""

    id: str
    source: Path
    digest: str  # of the files' content: a second read says whether they changed meanwhile
    # Every problem, one a line: text, as a MailerError does not survive pickling intact.
    error: str


def read_for_plan(
    source: Path, settings: Settings, *, keep_event: bool = False
) -> Reading | Invalid:
    """Read one event file for planning (in a worker process at start, else in a thread);
    `keep_event`: with the parsed event, for an event the catalog holds parsed."""
    return read_of(judge(source, settings), settings, keep_event=keep_event)


def read_of(loaded: Loaded, settings: Settings, *, keep_event: bool = False) -> Reading | Invalid:
    """A file as judged, made ready for planning if it is valid."""
    if loaded.event is None:
        return Invalid(loaded.id, loaded.source, loaded.digest, str(loaded.error))
    return read_version(loaded, settings, keep_event=keep_event)


def judge(source: Path, settings: Settings) -> Loaded:
    """An event file as read now, judged valid or not exactly as `mailer check` judges it
    (SPEC §5.2: a missing template is an error of the file): the service's one way in."""
    renderer = _renderer(settings.paths.templates, settings.sender.language)
    return judge_event(source, defaults=defaults_for(settings), renderer=renderer)


@functools.lru_cache(maxsize=4)
def _renderer(templates: Path, language: str) -> Renderer:
    """One per process (a worker's too), not one per file read."""
    return Renderer(templates, default_language=language)


@contextmanager
def readers(count: int) -> Iterator[Executor | None]:
    """Worker processes to read `count` event files in parallel, if there are enough
    to repay starting them (forked from reader_server.py's process); else None: the
    loop's threads."""
    if count < POOL_MIN_EVENTS or cores() < 2:  # on one core a second process is no help
        yield None
        return
    try:
        pool = ProcessPoolExecutor(
            max_workers=min(cores(), MAX_READERS),
            mp_context=reader_context(),
            initializer=_below_the_service,
        )
    except (OSError, NotImplementedError):  # no process semaphores here: threads it is
        yield None
        return
    try:
        yield pool
    finally:  # not waited for: joining the workers held the loop ~0.2 s, with a save under way
        pool.shutdown(wait=False, cancel_futures=True)


def _below_the_service() -> None:
    """A worker's first act: yield the CPU to the service's loop, where that is allowed (the
    systemd unit's system-call filter refuses it: then at the same priority)."""
    with contextlib.suppress(OSError):
        os.nice(READER_NICENESS)


async def read_ahead(
    sources: list[Path],
    settings: Settings,
    executor: Executor | None,
    *,
    keep_events: frozenset[Path] = frozenset(),
) -> AsyncIterator[tuple[Path, Reading | Invalid]]:
    """Each file's reading, in order, with up to READ_AHEAD more being read meanwhile (the
    files in `keep_events` with their parsed event)."""
    loop = asyncio.get_running_loop()
    warned = False

    def read(source: Path) -> functools.partial[Reading | Invalid]:  # a worker unpickles it
        return functools.partial(read_for_plan, source, settings, keep_event=source in keep_events)

    def submit(source: Path) -> asyncio.Future[Reading | Invalid]:
        try:
            return loop.run_in_executor(executor, read(source))
        except BrokenProcessPool:
            return loop.run_in_executor(None, read(source))

    async def settled(source: Path, future: asyncio.Future[Reading | Invalid]) -> Reading | Invalid:
        nonlocal warned
        try:
            return await future
        except BrokenProcessPool:  # a worker died (out of memory?): read it here instead
            if not warned:
                log.warning("a worker reading event files died; the service reads them itself")
                warned = True
            return await asyncio.to_thread(read(source))

    ahead: deque[tuple[Path, asyncio.Future[Reading | Invalid]]] = deque()
    for source in sources:
        ahead.append((source, submit(source)))
        if len(ahead) > READ_AHEAD:
            source, future = ahead.popleft()
            yield source, await settled(source, future)
    while ahead:
        source, future = ahead.popleft()
        yield source, await settled(source, future)
