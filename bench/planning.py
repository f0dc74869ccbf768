"""Scenario 3: start-up with 1,000 event files x 200 recipients (200,000 deliveries).

Time from spawning `mailer run` to its `running:` line, cold (empty database) and warm
(restart on the planned database), and the peak RSS (VmHWM) at that moment. Baseline: the
same command on an empty schedules folder, i.e. the interpreter, the imports and the
database, which no amount of planning work can go below.

Responsiveness: the probe of bench/probed.py reports every time the service's event loop
was blocked 10 ms or more before ready; the longest is how late a due mail, a reload or a
signal could be handled while planning.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from statistics import median

from bench.context import Context
from bench.project import make_project, now, people, write_event
from bench.report import Row
from bench.service import mailer_run, memory_mb

EVENTS, QUICK_EVENTS = 1000, 30
RECIPIENTS = 200
READY_TIMEOUT_S = 180.0
COLD_S, WARM_S, PEAK_MB, STALL_MS = 3.0, 0.8, 150.0, 50.0  # issue 18: 3 s, 0.8 s


@dataclass(frozen=True)
class Start:
    ready_s: float
    peak_mb: float
    rss_mb: float
    stall_ms: float  # the longest the loop was blocked before ready (0: never 10 ms)


def write_schedules(root: Path, *, events: int, first_due_in: timedelta) -> int:
    """`events` folders of RECIPIENTS each, due a minute apart from `first_due_in` on."""
    first = now() + first_due_in
    for number in range(events):
        name = f"e{number:04d}"
        write_event(
            root,
            name,
            due=first + timedelta(minutes=number),
            recipients=people(name, RECIPIENTS),
        )
    return events * RECIPIENTS


async def start_once(root: Path) -> Start:
    async with mailer_run(root) as service:
        ready_s = await service.wait_ready(timeout_s=READY_TIMEOUT_S)
        memory = memory_mb(service.pid)
        stall = max(service.stalls_before_ready, default=0.0)
    return Start(ready_s, memory["VmHWM"], memory["VmRSS"], stall)


def drop_database(root: Path) -> None:
    shutil.rmtree(root / "var", ignore_errors=True)


async def planning(ctx: Context) -> list[Row]:
    events = ctx.size(EVENTS, QUICK_EVENTS)
    root = ctx.folder("planning")
    make_project(root, port=ctx.sink.port)
    empty = ctx.folder("planning-empty")
    make_project(empty, port=ctx.sink.port)
    deliveries = write_schedules(root, events=events, first_due_in=timedelta(days=2))
    cold, warm, bare = [], [], []
    for _ in range(ctx.repeats):
        drop_database(empty)
        bare.append(await start_once(empty))
        drop_database(root)
        cold.append(await start_once(root))
    for _ in range(ctx.repeats):
        warm.append(await start_once(root))
    ctx.planned = root  # scenarios 4 and 5 start from this planned project
    ctx.facts["warm_ready_s"] = median(s.ready_s for s in warm)
    ctx.facts["planned_deliveries"] = deliveries
    return _rows(events, deliveries, cold, warm, bare)


def _rows(
    events: int,
    deliveries: int,
    cold: list[Start],
    warm: list[Start],
    bare: list[Start],
) -> list[Row]:
    scenario = f"3 planning {events:,}×{RECIPIENTS}"
    full = events == EVENTS

    def judged(ok: bool) -> bool | None:
        return ok if full else None  # a scaled-down run says nothing about the target

    bare_ready = median(s.ready_s for s in bare)
    bare_peak = median(s.peak_mb for s in bare)
    cold_ready = median(s.ready_s for s in cold)
    warm_ready = median(s.ready_s for s in warm)
    peak = max(s.peak_mb for s in cold + warm)
    stall = max(s.stall_ms for s in cold + warm)
    return [
        Row(
            scenario,
            f"cold start to ready ({deliveries:,} deliveries planned)",
            cold_ready,
            "s",
            baseline=bare_ready,
            baseline_name="empty schedules",
            target=f"< {COLD_S:g} s",
            met=judged(cold_ready < COLD_S),
            samples=[round(s.ready_s, 3) for s in cold],
            baseline_samples=[round(s.ready_s, 3) for s in bare],
        ),
        Row(
            scenario,
            "warm restart to ready (planned database)",
            warm_ready,
            "s",
            baseline=bare_ready,
            baseline_name="empty schedules",
            target=f"< {WARM_S:g} s",
            met=judged(warm_ready < WARM_S),
            samples=[round(s.ready_s, 3) for s in warm],
        ),
        Row(
            scenario,
            "peak RSS (VmHWM at ready, cold and warm)",
            peak,
            "MB",
            baseline=bare_peak,
            baseline_name="empty schedules",
            target=f"< {PEAK_MB:g} MB",
            met=judged(peak < PEAK_MB),
            note=f"RSS at ready: cold {median(s.rss_mb for s in cold):.0f} MB, "
            f"warm {median(s.rss_mb for s in warm):.0f} MB",
            samples=[round(s.peak_mb, 1) for s in cold + warm],
            baseline_samples=[round(s.peak_mb, 1) for s in bare],
        ),
        Row(
            scenario,
            "longest event-loop stall while planning",
            stall,
            "ms",
            baseline=median(s.stall_ms for s in bare),
            baseline_name="empty schedules",
            target=f"< {STALL_MS:g} ms (a stall delays due mail)",
            met=judged(stall < STALL_MS),
            note="worst of all starts; median of each start's worst: "
            f"cold {median(s.stall_ms for s in cold):.0f} ms, "
            f"warm {median(s.stall_ms for s in warm):.0f} ms",
            samples=[s.stall_ms for s in cold + warm],
        ),
    ]


async def planned_project(ctx: Context) -> Path:
    """Scenario 3's planned project, or (run alone) a new one planned by one cold start."""
    if ctx.planned is None:
        root = ctx.folder("planned")
        make_project(root, port=ctx.sink.port)
        deliveries = write_schedules(
            root, events=ctx.size(EVENTS, QUICK_EVENTS), first_due_in=timedelta(days=2)
        )
        ctx.facts["planned_deliveries"] = deliveries
        await start_once(root)
        ctx.facts["warm_ready_s"] = (await start_once(root)).ready_s
        ctx.planned = root
    return ctx.planned
