"""Scenario 11: cost as the plan grows (issue 18): 20,000, 200,000 and 2,000,000 deliveries
(100, 1,000 and 10,000 event folders of 200 recipients; 10 and 100 folders with --quick).

For each size, on its own project: cold start to ready (empty database), warm restart to
ready, peak RSS (VmHWM, cold and warm) and `mailer status --json`. The floor (the same
start on an empty schedules folder, and status on its empty database) is measured once in
the same run. Each figure is shown beside the same figure at the size ten times smaller,
multiplied by ten: below it, the cost grew less than linearly. The note gives the cost per
delivery above the floor, which should stay flat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from statistics import median

from bench.answers import STATUS, timed
from bench.context import Context
from bench.planning import RECIPIENTS, Start, drop_database, start_once, write_schedules
from bench.project import make_project
from bench.report import Row

FULL, QUICK = (100, 1_000, 10_000), (10, 100)
# Issue 18's targets at 2,000,000 deliveries.
TARGETS = {"cold": 30.0, "warm": 5.0, "peak": 250.0, "status": 1.0}
STATUS_CALLS = 3
# "At most linear" within the run-to-run noise of this machine (MEASUREMENTS.md: ±15-20 %).
NOISE = 1.2


@dataclass(frozen=True)
class Size:
    deliveries: int
    cold: list[Start]
    warm: list[Start]
    status_s: list[float]

    def figures(self) -> dict[str, float]:
        return {
            "cold": median(s.ready_s for s in self.cold),
            "warm": median(s.ready_s for s in self.warm),
            "peak": max(s.peak_mb for s in self.cold + self.warm),
            "status": median(self.status_s),
        }


async def scale(ctx: Context) -> list[Row]:
    floor = ctx.folder("scale-floor")
    make_project(floor, port=ctx.sink.port)
    bare = [await start_once(floor) for _ in range(ctx.repeats)]
    status_floor = await timed(floor, *STATUS, calls=STATUS_CALLS)
    sizes = [await _size(ctx, events) for events in (QUICK if ctx.quick else FULL)]
    return _rows(ctx, sizes, bare, status_floor)


async def _size(ctx: Context, events: int) -> Size:
    root = ctx.folder(f"scale-{events}")
    make_project(root, port=ctx.sink.port)
    deliveries = write_schedules(root, events=events, first_due_in=timedelta(days=2))
    cold = []
    for _ in range(ctx.repeats):
        drop_database(root)
        cold.append(await start_once(root))
    warm = [await start_once(root) for _ in range(ctx.repeats)]
    status_s = await timed(root, *STATUS, calls=STATUS_CALLS)
    return Size(deliveries, cold, warm, status_s)


MEASURES = {
    "cold": ("cold start to ready", "s"),
    "warm": ("warm restart to ready", "s"),
    "peak": ("peak RSS (VmHWM, cold and warm)", "MB"),
    "status": ("mailer status --json, wall", "s"),
}


def _rows(
    ctx: Context, sizes: list[Size], bare: list[Start], status_floor: list[float]
) -> list[Row]:
    floor = {
        "cold": median(s.ready_s for s in bare),
        "warm": median(s.ready_s for s in bare),
        "peak": max(s.peak_mb for s in bare),
        "status": median(status_floor),
    }
    rows = []
    for key, (measure, unit) in MEASURES.items():
        smaller: Size | None = None
        for size in sizes:
            rows.append(_row(ctx, key, measure, unit, size, smaller, floor[key]))
            smaller = size
    return rows


def _row(
    ctx: Context,
    key: str,
    measure: str,
    unit: str,
    size: Size,
    smaller: Size | None,
    floor: float,
) -> Row:
    figure = size.figures()[key]
    above = (figure - floor) / size.deliveries
    per = f"{above * 1e6:.1f} µs" if unit == "s" else f"{above * 2**20:.0f} bytes"
    note = f"above the floor ({floor:.2f} {unit}): {per} per delivery"
    judged = not ctx.quick and size.deliveries == RECIPIENTS * FULL[-1]
    if smaller is None:
        baseline, name = floor, "the floor (no events)"
    else:
        grown = size.deliveries / smaller.deliveries
        baseline = grown * smaller.figures()[key]
        name = f"{grown:g}× the figure at {smaller.deliveries:,}"
    samples = {
        "cold": [s.ready_s for s in size.cold],
        "warm": [s.ready_s for s in size.warm],
        "peak": [s.peak_mb for s in size.cold + size.warm],
        "status": size.status_s,
    }[key]
    target = f"< {TARGETS[key]:g} {unit}" if judged else "≤ linear"
    return Row(
        "11 scale",
        f"{measure}, {size.deliveries:,} deliveries",
        figure,
        unit,
        baseline=baseline,
        baseline_name=name,
        target=target,
        met=(figure < TARGETS[key]) if judged else _linear(figure, baseline, smaller),
        note=note,
        samples=[round(s, 3) for s in samples],
    )


def _linear(figure: float, linear: float, smaller: Size | None) -> bool | None:
    return None if smaller is None else figure <= linear * NOISE
