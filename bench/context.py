"""What every scenario shares: the sink, the size of the run, a scratch folder, a stopwatch."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.sink import Sink

T = TypeVar("T")


@dataclass
class Context:
    sink: Sink
    scratch: Path
    quick: bool
    repeats: int
    planned: Path | None = None  # scenario 3's project, planned: 4 and 5 start from it
    # What one scenario learnt that another uses: "warm_ready_s", "bare_rate" (small mail)
    facts: dict[str, float] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        path = self.scratch / name
        path.mkdir(parents=True)
        return path

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Measured:
    """Wall seconds of one measured stretch, and how busy the sink and this process were."""

    wall_s: float
    sink_cpu: float  # the sink's CPU seconds / wall seconds: 1.0 is one core saturated
    driver_cpu: float  # the same for this process (the in-process service, the baselines)


async def measure(ctx: Context, work: Awaitable[T]) -> tuple[T, Measured]:
    """Run `work` against a freshly reset sink, timing it and the CPU it took on both ends."""
    await ctx.sink.ask("reset")
    gc.collect()  # garbage of the previous row is not this row's cost
    sink_before = (await ctx.sink.ask("count"))["cpu_s"]
    cpu_before, started = time.process_time(), time.perf_counter()
    result = await work
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    sink_cpu = (await ctx.sink.ask("count"))["cpu_s"] - sink_before
    return result, Measured(wall, sink_cpu / wall, cpu / wall)
