"""Event files read for planning: in worker processes when there are many (at start).

One interpreter runs on one core, and reading (TOML, CSV, addresses, the deliveries each
event wants) is most of a cold start: 1,000 files of 200 recipients took 9.7 s read in the
service, ~4.4 s read by workers while the service saves plans. `read_for_plan` is the one
function that reads a file for planning, in a worker or in the service's own threads, and
`judge` the one that says whether a file is valid: as `mailer check` says (templates too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailer.config import Settings
from mailer.outbox import judge_event
from mailer.plan import Wanted, wanted_deliveries
from mailer.render import Renderer
from mailer.sources import Loaded, defaults_for
from mailer.store import Version

log = logging.getLogger("mailer")

# Event files are read this many ahead of the one being planned.
READ_AHEAD = 16
# From this many files to read, worker processes read them (one per core, at most this
# many; the service's own share is small): below it, starting them costs more than it saves.
POOL_MIN_EVENTS = 50
MAX_READERS = 4
READER_NICENESS = 10


@dataclass(frozen=True)
class Reading:
    """A valid event file as planning needs it: what the store keeps, what the event wants."""

    version: Version  # without its plan: that takes the stored deliveries
    wanted: list[Wanted]


def read_for_plan(source: Path, settings: Settings) -> Reading | None:
    """Read one event file for planning (in a worker process, at start); None if invalid.
    (Only a valid reading is sent back: errors do not survive pickling intact.)"""
    loaded = judge(source, settings)
    return reading_of(loaded, settings) if loaded.event is not None else None


def judge(source: Path, settings: Settings) -> Loaded:
    """An event file as read now, judged valid or not exactly as `mailer check` judges it
    (SPEC §5.2: a missing template is an error of the file): the service's one way in."""
    renderer = _renderer(settings.paths.templates, settings.sender.language)
    return judge_event(source, defaults=defaults_for(settings), renderer=renderer)


@functools.lru_cache(maxsize=4)
def _renderer(templates: Path, language: str) -> Renderer:
    """One per process (a worker's too), not one per file read."""
    return Renderer(templates, default_language=language)


def reading_of(loaded: Loaded, settings: Settings) -> Reading:
    """A valid event as planning needs it (in a worker, or in the service on hot reload)."""
    event = loaded.event
    assert event is not None
    mails = [
        {"name": m.name, "due": m.due.timestamp(), "expires": m.expires.timestamp(), "to": m.to}
        for m in event.mails
    ]
    version = Version(
        event.id,
        str(loaded.source),
        event.title,
        plan_digest(loaded.digest, settings),
        loaded.toml,
        loaded.csv,
        json.dumps(mails),
    )
    return Reading(version, wanted_deliveries(event, domain=settings.sender.message_id_domain))


def plan_digest(content_digest: str, settings: Settings) -> str:
    """The plan depends on the files and on the settings that shape times and IDs."""
    sending, sender = settings.sending, settings.sender
    basis = (
        f"{content_digest}|{sending.max_lateness}|{sender.timezone}|{sender.language}|"
        f"{sender.message_id_domain}"
    )
    return hashlib.sha256(basis.encode()).hexdigest()


@contextmanager
def readers(count: int) -> Iterator[Executor | None]:
    """Worker processes to read `count` event files in parallel, if there are enough
    to repay starting them (~0.5 s: a fresh interpreter imports mailer; "spawn", because
    forking a process that runs threads is unsafe); else None: the loop's threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if count < POOL_MIN_EVENTS or cores < 2:  # on one core a second process is no help
        yield None
        return
    try:
        pool = ProcessPoolExecutor(
            max_workers=min(cores, MAX_READERS),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_below_the_service,
        )
    except (OSError, NotImplementedError):  # no process semaphores here: threads it is
        yield None
        return
    with pool:
        yield pool


def _below_the_service() -> None:
    """A worker's first act: yield the CPU to the service's loop, where that is allowed (the
    systemd unit's system-call filter refuses it: then at the same priority)."""
    with contextlib.suppress(OSError):
        os.nice(READER_NICENESS)


async def read_ahead(
    sources: list[Path], settings: Settings, executor: Executor | None
) -> AsyncIterator[tuple[Path, Reading | None]]:
    """Each file's reading, in order, with up to READ_AHEAD more being read meanwhile."""
    loop = asyncio.get_running_loop()
    warned = False

    def submit(source: Path) -> asyncio.Future[Reading | None]:
        try:
            return loop.run_in_executor(executor, read_for_plan, source, settings)
        except BrokenProcessPool:
            return loop.run_in_executor(None, read_for_plan, source, settings)

    async def settled(source: Path, future: asyncio.Future[Reading | None]) -> Reading | None:
        nonlocal warned
        try:
            return await future
        except BrokenProcessPool:  # a worker died (out of memory?): read it here instead
            if not warned:
                log.warning("a worker reading event files died; the service reads them itself")
                warned = True
            return await asyncio.to_thread(read_for_plan, source, settings)

    ahead: deque[tuple[Path, asyncio.Future[Reading | None]]] = deque()
    for source in sources:
        ahead.append((source, submit(source)))
        if len(ahead) > READ_AHEAD:
            source, future = ahead.popleft()
            yield source, await settled(source, future)
    while ahead:
        source, future = ahead.popleft()
        yield source, await settled(source, future)
