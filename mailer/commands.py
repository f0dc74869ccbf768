"""What each command does: open the store and the transport, call the engine, close.

Every `mailer` command but `run` calls one function here: `send_now` (send),
`send_test` (send --test), `requeue_failed` (retry), `purge_now` (purge), `migrate_to`
(migrate), `check_events` (check), `write_previews` (preview) and `rehearse`; the last three
are checking.py's, previews.py's and rehearsal.py's, `send_now` and `send_test`
manual_send.py's, named here so that the commands are found in one place.
`run` is serving.py's and `status` is `status.read_status`: a start and the scripts that poll
status should not import what the other commands need.
The engine itself knows nothing of commands.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from mailer.checking import check_events
from mailer.clock import Clock
from mailer.config import Settings
from mailer.config_values import URL_PASSWORD_REFUSED, url_has_password
from mailer.delivery import DeliveryState
from mailer.errors import ConfigError, unusable_database
from mailer.foresight import Foresight
from mailer.manual_send import SENDABLE, SendReport, TestSend, send_now, send_test
from mailer.previews import write_previews
from mailer.rehearsal import rehearse
from mailer.retention import purge_due
from mailer.store import Purged, StoreUnavailable
from mailer.store.contract import is_url, open_store
from mailer.transport_choice import transport_for

__all__ = [
    "SENDABLE",
    "Foresight",
    "SendReport",
    "TestSend",
    "check_events",
    "migrate_to",
    "purge_now",
    "rehearse",
    "requeue_failed",
    "send_now",
    "send_test",
    "transport_for",
    "write_previews",
]


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
