"""What each command does: open the store and the transport, call the engine, close.

Every `mailer` command calls one function here: `serve` (run), `send_now` (send),
`send_test` (send --test), `requeue_failed` (retry), `purge_now` (purge), `migrate_to`
(migrate), `check_events` (check), `write_previews` (preview) and `rehearse`; the last three
are checking.py's, previews.py's and rehearsal.py's, `send_now` and `send_test`
manual_send.py's, named here so that the commands are found in one place.
`status` alone is `status.read_status`: scripts poll it, and it should not import the service.
The engine itself knows nothing of commands.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from datetime import datetime
from pathlib import Path

from mailer.checking import check_events
from mailer.clock import Clock
from mailer.config import Settings
from mailer.config_values import URL_PASSWORD_REFUSED, url_has_password
from mailer.delivery import DeliveryState
from mailer.engine import Engine
from mailer.errors import ConfigError, unusable_database
from mailer.foresight import Foresight
from mailer.manual_send import SENDABLE, SendReport, TestSend, send_now, send_test
from mailer.notify import Notifier
from mailer.previews import write_previews
from mailer.rehearsal import rehearse
from mailer.retention import purge_due
from mailer.store import Node, Purged, StoreUnavailable, is_damaged
from mailer.store.contract import is_url, open_store
from mailer.transport_choice import transport_for
from mailer.web import serve_page

__all__ = [
    "SENDABLE",
    "Foresight",
    "SendReport",
    "TestSend",
    "check_events",
    "freeze_what_is_loaded",
    "migrate_to",
    "purge_now",
    "rehearse",
    "requeue_failed",
    "send_now",
    "send_test",
    "serve",
    "transport_for",
    "write_previews",
]


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
    and the web page (SPEC §12); STOPPING=1 as soon as it stops."""
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
            tasks.append(asyncio.create_task(serve_page(settings.web, engine)))
        try:
            await engine.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        notifier.send("STOPPING=1")


async def purge_now(settings: Settings, *, clock: Clock, dry_run: bool) -> Purged:
    """`mailer purge`: erase now the personal data that is due (SPEC §13)."""
    store = await open_store(settings.paths.database)
    try:
        return await purge_due(settings, store, clock=clock, dry_run=dry_run)
    except StoreUnavailable as exc:  # locked, full, the server gone: one line, not a trace
        raise unusable_database(settings.paths.database, exc) from exc
    finally:
        await store.close()


async def requeue_failed(
    settings: Settings, event_id: str, mail: str | None, *, now: datetime
) -> int:
    """`mailer retry`: failed deliveries go back in the queue; a running service picks them
    up within POLL_S, a stopped one at its next start."""
    store = await open_store(settings.paths.database)
    try:
        return await store.requeue(
            event_id, mail, states=(DeliveryState.FAILED,), now=now.timestamp()
        )
    finally:
        await store.close()


async def migrate_to(settings: Settings, url: str) -> dict[str, int]:
    """`mailer migrate`: the SQLite database of these settings copied whole into the empty
    PostgreSQL database `url`; rows per table. psycopg is imported only here and for a URL."""
    if is_url(settings.paths.database):
        raise ConfigError(
            "is a PostgreSQL database already; migrate copies a SQLite file into one",
            key="paths.database",
        )
    if not is_url(url):
        raise ConfigError(
            "expected a postgresql:// URL (postgresql://mailer@db.example.org/mailer)", key="--to"
        )
    if url_has_password(url):
        raise ConfigError(URL_PASSWORD_REFUSED, key="--to")
    from mailer.store.transfer import copy_to_postgres

    return await copy_to_postgres(Path(settings.paths.database), url)
