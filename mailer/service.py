"""What each command does to the service: open the store and the transport, run, close.

`mailer run`, `send`, `retry` and `status` each call one function here; the engine itself
knows nothing of commands.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import datetime

from mailer.clock import Clock
from mailer.config import Settings
from mailer.config import SmtpTransport as SmtpSettings
from mailer.engine import Engine
from mailer.errors import MailerError
from mailer.plan import DeliveryState
from mailer.status import status_report
from mailer.store import Narrow, Store
from mailer.transports.base import Transport
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport


def transport_for(settings: Settings) -> Transport:
    """The transport `[transport] kind` names."""
    if isinstance(settings.transport, SmtpSettings):
        return SmtpTransport(
            settings.transport,
            connections=settings.sending.connections,
            max_per_minute=settings.sending.max_per_minute,
        )
    return MaildirTransport(settings.transport.path)


async def serve(settings: Settings, *, clock: Clock) -> None:
    """`mailer run`: the service until SIGTERM or SIGINT, then a clean stop."""
    store = await Store.open(settings.paths.database)
    engine = Engine(settings, store=store, transport=transport_for(settings), clock=clock)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, engine.stop)
    try:
        await engine.run()
    finally:
        await store.close()


async def send_now(
    settings: Settings, event_id: str, mail: str, *, recipient: str | None, clock: Clock
) -> Counter[DeliveryState]:
    """`mailer send`: queue the mail now for those who have not had it, send it, and say
    how each delivery ended. Safe while the service runs: what the service has in flight is
    left alone (no reset of `sending` here), and a claim is taken by one process only."""
    store = await Store.open(settings.paths.database)
    engine = Engine(settings, store=store, transport=transport_for(settings), clock=clock)
    try:
        await engine.catalog.load_all()
        if event_id not in engine.events or mail not in {
            m.name for m in engine.events[event_id].mails
        }:
            raise MailerError(
                f'no mail "{mail}" in a valid event "{event_id}"', source=settings.paths.schedules
            )
        await store.requeue(
            event_id,
            mail,
            recipient=recipient,
            now=engine._now(),
            states=(
                DeliveryState.SCHEDULED,
                DeliveryState.RETRYING,
                DeliveryState.FAILED,
                DeliveryState.EXPIRED,
            ),
        )
        await engine.step(only=Narrow(event_id, mail, recipient))
        return engine.outcomes
    finally:
        await engine.transport.close()
        await store.close()


async def read_status(settings: Settings, *, event_id: str | None, mail: str | None) -> dict:
    """`mailer status`: read-only, safe while the service runs (WAL)."""
    if not settings.paths.database.exists():  # the service has not run yet: nothing to show
        return {"events": []}
    store = await Store.open(settings.paths.database)
    try:
        return await status_report(store, zone=settings.sender.zone, event_id=event_id, mail=mail)
    finally:
        await store.close()


async def requeue_failed(
    settings: Settings, event_id: str, mail: str | None, *, now: datetime
) -> int:
    """`mailer retry`: failed deliveries go back in the queue; a running service picks them
    up within POLL_S, a stopped one at its next start."""
    store = await Store.open(settings.paths.database)
    try:
        return await store.requeue(
            event_id, mail, states=(DeliveryState.FAILED,), now=now.timestamp()
        )
    finally:
        await store.close()
