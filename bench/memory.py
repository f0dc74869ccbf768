"""Scenario 6: memory of `mailer run` over time, and its sending rate as deployed.

100 events x 200 recipients, all due now (20,000 messages). VmRSS when the event loop
starts (imports done), when ready (all planned), and every SAMPLE_S while sending, with the
sink's count. "No growth with messages sent": RSS after all are sent against RSS after the
first tenth, when every cache and pool has warmed up.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from statistics import median

from bench.context import Context
from bench.planning import READY_TIMEOUT_S, RECIPIENTS
from bench.project import make_project, now, people, write_event
from bench.report import Row
from bench.service import delivery_states, mailer_run, memory_mb

EVENTS, QUICK_EVENTS = 100, 3
SAMPLE_S = 0.25
SEND_TIMEOUT_S = 900.0
GROWTH_MB = 5.0  # 250 bytes per message over 18,000 messages: a leak shows, noise does not


async def memory(ctx: Context) -> list[Row]:
    events = ctx.size(EVENTS, QUICK_EVENTS)
    total = events * RECIPIENTS
    root = ctx.folder("memory")
    make_project(root, port=ctx.sink.port)
    due = now() - timedelta(minutes=1)
    for number in range(events):
        write_event(
            root, f"m{number:03d}", due=due, recipients=people(f"m{number:03d}", RECIPIENTS)
        )
    await ctx.sink.ask("reset")
    series: list[tuple[int, float]] = []  # (messages at the sink, VmRSS MB)
    async with mailer_run(root) as service:
        await service.wait_ready(timeout_s=READY_TIMEOUT_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SEND_TIMEOUT_S
        while loop.time() < deadline:
            count = await ctx.sink.messages()
            series.append((count, memory_mb(service.pid)["VmRSS"]))
            if count >= total and delivery_states(root).get("sent") == total:
                break
            await asyncio.sleep(SAMPLE_S)
        final = memory_mb(service.pid)
        received = await ctx.sink.received(str(root / "received.tsv"))
        marks = service.memory_at
    if len(received) < total:
        raise RuntimeError(f"only {len(received)} of {total} messages in {SEND_TIMEOUT_S} s")
    return _rows(total, series, final, marks, received)


def _rows(
    total: int,
    series: list[tuple[int, float]],
    final: dict[str, float],
    marks: dict[str, dict[str, float]],
    received: list[tuple[float, str]],
) -> list[Row]:
    tenth = next(rss for count, rss in series if count >= total // 10)
    after = final["VmRSS"]
    times = sorted(at for at, _ in received)
    rate = (len(times) - 1) / (times[-1] - times[0])
    start, ready = marks["loop started"]["VmRSS"], marks["ready"]["VmRSS"]
    scenario = "6 memory over time"
    full = total == EVENTS * RECIPIENTS
    return [
        Row(
            scenario,
            f"RSS after sending {total:,} (mailer run)",
            after,
            "MB",
            baseline=tenth,
            baseline_name=f"after {total // 10:,}",
            target=f"≤ baseline + {GROWTH_MB:g} MB",
            met=(after - tenth <= GROWTH_MB) if full else None,
            note=f"start {start:.0f} MB → planned {ready:.0f} MB → after first tenth "
            f"{tenth:.0f} MB → end {after:.0f} MB; peak {final['VmHWM']:.0f} MB",
            samples=[rss for _, rss in series],
            extra={"series": series, "marks": marks, "final": final},
        ),
        Row(
            scenario,
            "send rate of mailer run as deployed (sink clock)",
            rate,
            "msg/s",
            note=f"{total:,} small messages, 4 conns, first to last at the sink; "
            f"median gap {1000 * median(b - a for a, b in itertools.pairwise(times)):.1f} ms",
        ),
    ]
