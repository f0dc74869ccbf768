"""`max_per_minute` held by the nodes on one database together (SPEC §9), through a real
PostgreSQL database and a real SMTP server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from mailer.clock import SystemClock
from mailer.config import Settings, load_settings
from mailer.config_transport import SmtpSettings
from mailer.engine import Engine
from mailer.pacing import SharedPace
from mailer.store import Narrow, open_store
from mailer.transports.smtp import SmtpTransport
from tests.project import make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer
from tests.test_service import soon

PER_MINUTE = 240  # one message every 0.25 s, for all nodes together
PEOPLE = 5  # per node


@asynccontextmanager
async def node(settings: Settings, server: SmtpServer) -> AsyncIterator[Engine]:
    """A node whose transport is built as transport_choice.transport_for builds it, but trusting
    the test CA."""
    store = await open_store(settings.paths.database)
    assert isinstance(settings.transport, SmtpSettings)
    transport = SmtpTransport(
        settings.transport,
        connections=settings.sending.connections,
        max_per_minute=PER_MINUTE,
        tls_context=server.client_context(),
        pace=SharedPace(store, max_per_minute=PER_MINUTE, clock=SystemClock()),
    )
    engine = Engine(settings, store=store, transport=transport, clock=SystemClock())
    try:
        yield engine
    finally:
        await engine.close()
        await store.close()


async def arrivals(server: SmtpServer, count: int) -> list[float]:
    """When each of `count` messages arrived, on the loop's clock (looked at every 5 ms)."""
    loop, seen = asyncio.get_running_loop(), []
    while len(seen) < count:
        seen += [loop.time()] * (len(server.messages) - len(seen))
        await asyncio.sleep(0.005)
    return seen


async def test_two_nodes_send_at_max_per_minute_together_evenly_spaced(
    tmp_path: Path,
    fresh_database: str,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)
    config = make_project(tmp_path, transport=smtp_transport(smtp_server.port), connections=2)
    config.write_text(
        config.read_text()
        .replace('"var/mailer.sqlite3"', f'"{fresh_database}"')
        .replace("max_per_minute = 0", f"max_per_minute = {PER_MINUTE}")
    )
    settings = load_settings(config)
    for name in ("seminarium", "workshop"):
        write_event(tmp_path, name, timed_event(soon(-1), people=PEOPLE))
    async with AsyncExitStack() as nodes:
        a = await nodes.enter_async_context(node(settings, smtp_server))
        b = await nodes.enter_async_context(node(settings, smtp_server))
        await a.plan()
        watching = asyncio.create_task(arrivals(smtp_server, 2 * PEOPLE))
        # Each node sends one event's mail, at once: only the database joins their rates.
        done = await asyncio.gather(
            a.step(only=Narrow("seminarium", "invitation")),
            b.step(only=Narrow("workshop", "invitation")),
        )
        times = await asyncio.wait_for(watching, timeout=10)

    assert [result.handled for result in done] == [PEOPLE, PEOPLE]
    assert len({m.message_id for m in smtp_server.messages}) == 2 * PEOPLE
    interval_s = 60 / PER_MINUTE
    # Each node alone would keep 240 a minute: ten messages in ~1 s. Together, one per 0.25 s.
    assert times[-1] - times[0] >= (2 * PEOPLE - 1) * interval_s * 0.9
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= interval_s * 0.6, gaps  # evenly: no two at once
