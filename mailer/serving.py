"""`mailer run`: the service's life. Open the store, run the engine, and beside it, once the
plan is loaded, systemd's notifications and the web page (SPEC §12).

Apart from `commands.py` so that a start imports the engine and nothing of the other
commands (checking's reports, previews, rehearsal, migration): imports are most of what a
start costs before it plans (issue 18). The web page's own (aiohttp, the pages' templates,
~0.15 s) are imported in a thread once the plan is in force, while due mail goes out.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from mailer.clock import Clock
from mailer.config import Settings
from mailer.config_web import WebSettings
from mailer.engine import Engine
from mailer.errors import unusable_database
from mailer.notify import Notifier
from mailer.store import Node, StoreUnavailable, is_damaged
from mailer.store.contract import open_store
from mailer.transport_choice import transport_for

PageServer = Callable[[WebSettings, Engine], Coroutine[Any, Any, None]]


def freeze_what_is_loaded() -> None:
    """What is loaded by now (modules, templates' machinery, settings) lives as long as the
    process. Frozen out of the collector's sight, a full collection takes a few ms instead of
    the ~30 ms that held up the event loop (and due mail) every second or so. Done before the
    loop starts: the collection itself took 40-70 ms, a stall of the starting loop."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings, *, clock: Clock) -> None:
    """`mailer run`: the service until SIGTERM or SIGINT, then a clean stop. Call
    `freeze_what_is_loaded` first, before the loop runs."""
    lease_s = settings.sending.lease.total_seconds()
    store = await open_store(settings.paths.database, node=Node.here(lease_s=lease_s))
    try:
        engine = Engine(
            settings,
            store=store,
            transport=transport_for(settings, store=store, clock=clock),
            clock=clock,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, engine.stop)
        await _run_with_page(engine, settings)
    except StoreUnavailable as exc:
        if not is_damaged(exc):  # a lock held at start, a full disk: a crash, restarted
            raise
        raise unusable_database(settings.paths.database, exc) from exc
    finally:
        await store.close()


async def _run_with_page(engine: Engine, settings: Settings) -> None:
    """The engine, and beside it once the plan is loaded: systemd's READY=1 and watchdog,
    and the web page; STOPPING=1 as soon as it stops."""
    beside = asyncio.create_task(_beside(engine, settings))
    try:
        await engine.run()
    finally:
        beside.cancel()
        await asyncio.gather(beside, return_exceptions=True)


async def _beside(engine: Engine, settings: Settings) -> None:
    notifier = Notifier.from_environment()
    try:
        await engine.loaded.wait()
        notifier.send("READY=1")
        tasks = [asyncio.create_task(notifier.keep_alive(engine.stopping))]
        if settings.web.listen:
            serve_page = await asyncio.to_thread(_page_server)
            tasks.append(asyncio.create_task(serve_page(settings.web, engine)))
        try:
            await engine.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        notifier.send("STOPPING=1")


def _page_server() -> PageServer:
    """Imported in a thread: the loop goes on sending meanwhile."""
    from mailer.web import serve_page

    return serve_page
