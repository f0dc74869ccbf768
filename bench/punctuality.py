"""Scenario 4: how late each mail leaves, with the 200,000-delivery plan loaded.

On scenario 3's planned project, each round adds 10 events x 10 recipients due one a second
(issue 18's shape: "paced"), then 100 events x 10 recipients due one every 100 ms over 10 s
(1,000 spread deliveries), then 10 events x 200 recipients all due one second after the
spread (a burst of 2,000). All rounds are in the files before `mailer run`
starts; the first is due a safe margin after the expected ready time. Lateness is the
sink's receive time minus the due time, matched by the recipient address; the burst's
drain time is its last arrival minus its due time. Each round is one repeat.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from bench.context import Context
from bench.planning import READY_TIMEOUT_S, planned_project
from bench.project import now, people, write_event
from bench.report import Row, percentile
from bench.service import mailer_run

P99_MS = 50.0  # the spread (issue 13)
PACED_P99_MS = 25.0  # issue 18
DRAIN_TIMEOUT_S = 120.0


SPREAD_PEOPLE = 10  # and each paced event's
# Without scenario 1's figure, assume a slow service: rounds further apart cost only time.
DEFAULT_RATE = 50.0


@dataclass(frozen=True)
class Shape:
    spread_events: int  # each SPREAD_PEOPLE recipients, one due instant each
    spread_s: float
    burst_events: int  # each `burst_people` recipients, all at one instant
    burst_people: int = 200
    paced_events: int = 10  # each SPREAD_PEOPLE recipients, one a second
    paced_gap_s: float = 1.0

    @property
    def paced_s(self) -> float:
        """From the first paced mail to the spread's first."""
        return self.paced_events * self.paced_gap_s + 1

    @property
    def burst(self) -> int:
        return self.burst_events * self.burst_people

    @property
    def spread(self) -> int:
        return self.spread_events * SPREAD_PEOPLE

    def period_s(self, rate: float) -> float:
        """One round's start to the next: the spread, a second, the burst drained at `rate`
        with half as much again to spare, so that no round starts while one is draining."""
        return self.paced_s + self.spread_s + 1 + 1.5 * self.burst / rate + 2


FULL = Shape(spread_events=100, spread_s=10.0, burst_events=10)
QUICK = Shape(spread_events=10, spread_s=1.0, burst_events=1, burst_people=100, paced_events=3)


def write_rounds(
    ctx: Context, shape: Shape, *, first: datetime, period_s: float
) -> dict[str, datetime]:
    """Every round's events; the due time of each address prefix (one per event)."""
    root = ctx.planned
    assert root is not None
    due_of: dict[str, datetime] = {}
    step = timedelta(seconds=shape.spread_s / shape.spread_events)
    for round_number in range(ctx.repeats):
        paced = first + timedelta(seconds=round_number * period_s)
        for number in range(shape.paced_events):
            due_of[f"r{round_number}p{number:02d}"] = paced + timedelta(
                seconds=number * shape.paced_gap_s
            )
        start = paced + timedelta(seconds=shape.paced_s)
        for number in range(shape.spread_events):
            prefix = f"r{round_number}s{number:03d}"
            due_of[prefix] = start + number * step
        burst = start + timedelta(seconds=shape.spread_s + 1)
        for number in range(shape.burst_events):
            due_of[f"r{round_number}b{number:02d}"] = burst
    for prefix, due in due_of.items():
        count = shape.burst_people if _group(prefix).endswith("b") else SPREAD_PEOPLE
        write_event(root, f"punctual-{prefix}", due=due, recipients=people(prefix, count))
    return due_of


def remove_rounds(ctx: Context, due_of: dict[str, datetime]) -> None:
    """Back to scenario 3's events alone (scenario 5 starts from those)."""
    assert ctx.planned is not None
    for prefix in due_of:
        shutil.rmtree(ctx.planned / "schedules" / f"punctual-{prefix}")


async def punctuality(ctx: Context) -> list[Row]:
    await planned_project(ctx)
    shape = QUICK if ctx.quick else FULL
    # The new events are planned at start too: allow for a slow start, then some.
    lead_s = 1.5 * ctx.facts["warm_ready_s"] + 3.0
    first = now() + timedelta(seconds=lead_s)
    period_s = shape.period_s(ctx.facts.get("service_rate", DEFAULT_RATE))
    due_of = write_rounds(ctx, shape, first=first, period_s=period_s)
    expected = ctx.repeats * (shape.paced_events * SPREAD_PEOPLE + shape.spread + shape.burst)
    await ctx.sink.ask("reset")
    assert ctx.planned is not None
    spawned = now()
    try:
        async with mailer_run(ctx.planned) as service:
            ready_s = await service.wait_ready(timeout_s=READY_TIMEOUT_S)
            last_due = max(due_of.values())
            wait_s = (last_due - now()).total_seconds() + DRAIN_TIMEOUT_S
            await ctx.sink.wait_for(expected, timeout_s=wait_s)
            received = await ctx.sink.received(str(ctx.scratch / "punctuality.tsv"))
            stalls = service.stalls_after_ready
    finally:
        remove_rounds(ctx, due_of)
    if len(received) < expected:
        raise RuntimeError(f"punctuality: {len(received)} of {expected} messages arrived")
    ready_at = spawned + timedelta(seconds=ready_s)
    return _rows(ctx, shape, due_of, received, stalls, ready_late=ready_at > first)


def _lateness(
    due_of: dict[str, datetime], received: list[tuple[float, str]]
) -> dict[str, list[float]]:
    """Seconds late per message, grouped by "<round>p" (paced), "<round>s" (spread) and
    "<round>b" (burst)."""
    found: dict[str, list[float]] = {}
    for at, rcpt in received:
        prefix = rcpt.split("-", 1)[0]
        found.setdefault(_group(prefix), []).append(at - due_of[prefix].timestamp())
    return found


def _group(prefix: str) -> str:
    """ "r1s042" -> "r1s" (round 1, spread), "r1b03" -> "r1b" (burst), "r1p04" -> "r1p"."""
    return prefix[: next(i for i, c in enumerate(prefix) if c in "psb") + 1]


def _rows(
    ctx: Context,
    shape: Shape,
    due_of: dict[str, datetime],
    received: list[tuple[float, str]],
    stalls: list[float],
    *,
    ready_late: bool,
) -> list[Row]:
    late = _lateness(due_of, received)
    rounds = range(ctx.repeats)
    spread = [[1000 * s for s in late[f"r{k}s"]] for k in rounds]
    paced = [[1000 * s for s in late[f"r{k}p"]] for k in rounds]
    paced_p50 = [percentile(ms, 50) for ms in paced]
    paced_p99 = [percentile(ms, 99) for ms in paced]
    p50 = [percentile(ms, 50) for ms in spread]
    p99 = [percentile(ms, 99) for ms in spread]
    worst = [max(ms) for ms in spread]
    drain = [max(late[f"r{k}b"]) for k in rounds]
    burst, spread_count = shape.burst, shape.spread
    scenario = "4 punctuality"
    bare_rate = ctx.facts.get("bare_rate")
    full = shape is FULL
    warning = "; READY AFTER THE FIRST DUE TIME" if ready_late else ""
    return [
        Row(
            scenario,
            f"paced: {shape.paced_events} mails {shape.paced_gap_s:g} s apart × {SPREAD_PEOPLE}, "
            "lateness p99",
            median(paced_p99),
            "ms",
            target=f"< {PACED_P99_MS:g} ms",
            met=median(paced_p99) < PACED_P99_MS if full else None,
            note=f"p50 {median(paced_p50):.1f} ms, max {median(max(ms) for ms in paced):.0f} ms "
            f"(medians of {ctx.repeats} rounds)",
            samples=[round(v, 1) for v in paced_p99],
            extra={"p50_ms": paced_p50, "p99_ms": paced_p99},
        ),
        Row(
            scenario,
            f"spread: {spread_count:,} over {shape.spread_s:g} s, lateness p99",
            median(p99),
            "ms",
            target=f"< {P99_MS:g} ms",
            met=median(p99) < P99_MS if full else None,
            note=f"p50 {median(p50):.1f} ms, max {median(worst):.0f} ms (medians of "
            f"{ctx.repeats} rounds); longest loop stall {max(stalls, default=0):.0f} ms" + warning,
            samples=[round(v, 1) for v in p99],
            extra={"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "stalls_ms": stalls},
        ),
        Row(
            scenario,
            f"burst: {burst:,} due at one instant, time to drain",
            median(drain),
            "s",
            baseline=burst / bare_rate if bare_rate else None,
            baseline_name="at the bare loop's rate",
            note=f"{burst / median(drain):.0f} msg/s while draining",
            samples=[round(v, 2) for v in drain],
        ),
    ]
