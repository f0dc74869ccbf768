"""Scenario 7: the organisers' pages with 1,000 events × 200 recipients planned.

`mailer run` (with the loop probe) serves scenario 3's planned project, or plans its own;
once ready, each page is fetched over HTTP on 127.0.0.1 a few times unmeasured (the
catalog parses the event, the database pages are read into the cache), then timed: from
sending the request to the last byte. The events page reads every event and its counts
(one GROUP BY over all 200,000 deliveries); a mail's page lists its 200 recipients.
"""

from __future__ import annotations

import asyncio
import socket
import time
from statistics import median

import aiohttp

from bench.context import Context
from bench.planning import EVENTS, QUICK_EVENTS, READY_TIMEOUT_S, RECIPIENTS, planned_project
from bench.report import Row
from bench.service import mailer_run

EVENTS_MS, MAIL_MS = 300.0, 200.0
WARM_UP, TIMED = 3, 15


def _pages(events: int) -> dict[str, tuple[str, float]]:
    """measure: (path, target ms); the mail of an event in the middle."""
    return {
        "events page (every event, counts, next due)": ("/", EVENTS_MS),
        f"a mail's recipients page ({RECIPIENTS} rows)": (
            f"/events/e{events // 2:04d}/mails/invitation",
            MAIL_MS,
        ),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def pages(ctx: Context) -> list[Row]:
    root = await planned_project(ctx)
    config = root / "config.toml"
    text = config.read_text(encoding="utf-8").split("\n[web]\n")[0]
    port = _free_port()
    config.write_text(f'{text}\n[web]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
    events = ctx.size(EVENTS, QUICK_EVENTS)
    timings: dict[str, list[float]] = {}
    async with mailer_run(root) as service, aiohttp.ClientSession() as client:
        await service.wait_ready(timeout_s=READY_TIMEOUT_S)
        await _page_up(client, f"http://127.0.0.1:{port}/healthz")
        for measure, (path, _) in _pages(events).items():
            timings[measure] = []
            for round_ in range(WARM_UP + TIMED):
                started = time.perf_counter()
                async with client.get(f"http://127.0.0.1:{port}{path}") as reply:
                    body = await reply.read()
                    assert reply.status == 200, (path, reply.status)
                if round_ >= WARM_UP:
                    timings[measure].append((time.perf_counter() - started) * 1000)
            ctx.facts[f"page_bytes {path}"] = len(body)
    full = not ctx.quick
    scenario = f"7 pages {events:,}×{RECIPIENTS}"
    return [
        Row(
            scenario,
            measure,
            median(timings[measure]),
            "ms",
            target=f"< {target:g} ms",
            met=median(timings[measure]) < target if full else None,
            note=f"max {max(timings[measure]):.0f} ms of {TIMED}, "
            f"{ctx.facts[f'page_bytes {path}'] / 1024:.0f} KB",
            samples=[round(t, 1) for t in timings[measure]],
        )
        for measure, (path, target) in _pages(events).items()
    ]


async def _page_up(client: aiohttp.ClientSession, url: str, timeout_s: float = 10.0) -> None:
    """The page starts beside the engine once the plan is loaded: wait until it answers."""
    deadline = time.perf_counter() + timeout_s
    while True:
        try:
            async with client.get(url) as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            if time.perf_counter() > deadline:
                raise
        await asyncio.sleep(0.05)
