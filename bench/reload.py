"""Scenario 5: hot reload latency, from an event file written to its plan in the database.

`mailer run` on scenario 3's planned project (1,000 events). Each edit moves one event's
send_at by a minute and rewrites event.toml in place; the driver then polls the database
(read-only, WAL) every POLL_S until that event's deliveries carry the new due time.
Baseline: the same writes watched by a bare `watchfiles.awatch` with the watcher's own
quiet and debounce settings, i.e. the floor that file watching alone sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median

from bench.context import Context
from bench.planning import READY_TIMEOUT_S, planned_project
from bench.project import REPO, toml_time
from bench.report import Row
from bench.service import mailer_run

EDITS, QUICK_EDITS = 50, 5
EVENT = "e0012"  # exists in the quick run too
POLL_S = 0.002
EDIT_TIMEOUT_S = 5.0
PAUSE_S = 0.25  # between edits: each is its own change, as a person saving makes them
# `running:` is logged before the watcher task starts, and watchfiles needs a moment to set
# up its watch: an edit in that window is not seen until the next change (or restart).
WATCH_SETUP_S = 1.0
WORST_MS = 300.0
_SEND_AT = re.compile(r"^send_at = (\S+)$", re.MULTILINE)


def _edit(source: Path, due: datetime) -> None:
    text = source.read_text(encoding="utf-8")
    source.write_text(_SEND_AT.sub(f"send_at = {toml_time(due)}", text), encoding="utf-8")


def _due_now(source: Path) -> datetime:
    found = _SEND_AT.search(source.read_text(encoding="utf-8"))
    assert found is not None
    return datetime.fromisoformat(found[1])


async def _until_planned(db: sqlite3.Connection, due: float) -> None:
    deadline = time.perf_counter() + EDIT_TIMEOUT_S
    query = "SELECT due FROM deliveries WHERE event = ? LIMIT 1"
    while abs(db.execute(query, (EVENT,)).fetchone()[0] - due) > 1e-3:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"reload: plan not updated {EDIT_TIMEOUT_S} s after the edit")
        await asyncio.sleep(POLL_S)


async def _service_latencies(root: Path, edits: int) -> list[float]:
    source = root / "schedules" / EVENT / "event.toml"
    original = _due_now(source)
    latencies = []
    uri = f"file:{root / 'var' / 'mailer.sqlite3'}?mode=ro"
    async with mailer_run(root) as service:
        await service.wait_ready(timeout_s=READY_TIMEOUT_S)
        await asyncio.sleep(WATCH_SETUP_S)
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            for number in range(1, edits + 1):
                due = original + timedelta(minutes=number)
                started = time.perf_counter()
                _edit(source, due)
                await _until_planned(db, due.timestamp())
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(PAUSE_S)
    _edit(source, original)  # the next start sees scenario 3's plan again
    return latencies


async def _watch_latencies(folder: Path, edits: int) -> list[float]:
    """Write -> `awatch` yields, with the watcher's settings: the floor of any reload."""
    from watchfiles import awatch

    from mailer.watcher import DEBOUNCE_MS, QUIET_MS

    source = folder / "event.toml"
    source.write_text("x = 0\n", encoding="utf-8")
    stop = asyncio.Event()
    seen: asyncio.Queue[float] = asyncio.Queue()

    async def watching() -> None:
        async for _ in awatch(folder, stop_event=stop, step=QUIET_MS, debounce=DEBOUNCE_MS):
            seen.put_nowait(time.perf_counter())

    task = asyncio.create_task(watching())
    await asyncio.sleep(WATCH_SETUP_S)
    latencies = []
    for number in range(edits):
        started = time.perf_counter()
        source.write_text(f"x = {number}\n", encoding="utf-8")
        latencies.append(await asyncio.wait_for(seen.get(), EDIT_TIMEOUT_S) - started)
        await asyncio.sleep(PAUSE_S)
    stop.set()
    await task
    return latencies


async def reload_latency(ctx: Context) -> list[Row]:
    scenario = "5 reload"
    if not (REPO / "mailer" / "watcher.py").exists():
        return [Row(scenario, "not yet: no watcher (mailer/watcher.py)", None, "ms")]
    root = await planned_project(ctx)
    edits = ctx.size(EDITS, QUICK_EDITS)
    service = [1000 * s for s in await _service_latencies(root, edits)]
    floor = [1000 * s for s in await _watch_latencies(ctx.folder("watch-floor"), edits)]
    full = edits == EDITS
    return [
        Row(
            scenario,
            f"edit → plan in database, worst of {edits}",
            max(service),
            "ms",
            baseline=max(floor),
            baseline_name="bare awatch",
            target=f"< {WORST_MS:g} ms",
            met=max(service) < WORST_MS if full else None,
            samples=[round(v, 1) for v in service],
            baseline_samples=[round(v, 1) for v in floor],
        ),
        Row(
            scenario,
            f"edit → plan in database, median of {edits}",
            median(service),
            "ms",
            baseline=median(floor),
            baseline_name="bare awatch",
        ),
    ]
