"""Scenario 10: answers at once (issue 18). How long an operator's command takes, and whether
a start is slowed by someone polling status.

- `mailer --help`: interpreter, click and the command table; baseline `python -c pass`.
- `mailer status --json` on scenario 3's planned project (200,000 deliveries); baseline the
  same command on a project whose database is empty (interpreter, imports, settings).
- cold start to ready while `mailer status --json` runs every 0.5 s beside it (as a script
  or the page polls), on scenario 3's files with a new database; baseline the same start
  without the poller, in the same run. The status calls during the start are in the note.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from statistics import median

from bench.context import Context
from bench.planning import drop_database, planned_project, start_once
from bench.project import REPO, make_project
from bench.report import Row, percentile

HELP_S, STATUS_S, COLD_POLLED_S = 0.2, 0.3, 3.0
CALLS = 5  # timed calls of a command, after one unmeasured (the page cache warm)
POLL_EVERY_S = 0.5


async def command_s(root: Path, *args: str) -> tuple[float, int]:
    """Wall seconds of one `python <args>` in `root`, and its exit status."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    code = await process.wait()
    return time.perf_counter() - started, code


async def timed(root: Path, *args: str, calls: int = CALLS) -> list[float]:
    """`calls` wall times of a command that must succeed, after one unmeasured."""
    found = []
    for number in range(calls + 1):
        seconds, code = await command_s(root, *args)
        if code != 0:
            raise RuntimeError(f"{' '.join(args)} in {root} exited {code}")
        if number:
            found.append(seconds)
    return found


STATUS = ("-m", "mailer", "status", "--json", "-c", "config.toml")


async def answers(ctx: Context) -> list[Row]:
    root = await planned_project(ctx)
    empty = ctx.folder("answers-empty")
    make_project(empty, port=ctx.sink.port)
    await start_once(empty)  # an empty database, as a service on no events leaves it
    help_s = await timed(empty, "-m", "mailer", "--help")
    bare_s = await timed(empty, "-c", "pass")
    status_s = await timed(root, *STATUS)
    status_empty_s = await timed(empty, *STATUS)
    alone, polled, during = [], [], []
    for _ in range(ctx.repeats):
        drop_database(root)
        alone.append((await start_once(root)).ready_s)
        drop_database(root)
        ready_s, calls = await _start_polled(root)
        polled.append(ready_s)
        during += calls
    return _rows(ctx, help_s, bare_s, status_s, status_empty_s, alone, polled, during)


async def _start_polled(root: Path) -> tuple[float, list[float]]:
    """A cold start with `status --json` run every POLL_EVERY_S beside it: its ready time
    and the status calls' wall times."""
    calls: list[float] = []

    async def poll() -> None:
        while True:
            calls.append((await command_s(root, *STATUS))[0])
            await asyncio.sleep(POLL_EVERY_S)

    poller = asyncio.create_task(poll())
    try:
        ready_s = (await start_once(root)).ready_s
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    return ready_s, calls


def _rows(
    ctx: Context,
    help_s: list[float],
    bare_s: list[float],
    status_s: list[float],
    status_empty_s: list[float],
    alone: list[float],
    polled: list[float],
    during: list[float],
) -> list[Row]:
    scenario = "10 answers"
    full = not ctx.quick
    planned = ctx.facts["planned_deliveries"]
    return [
        Row(
            scenario,
            "mailer --help, wall",
            median(help_s),
            "s",
            baseline=median(bare_s),
            baseline_name="python -c pass",
            target=f"< {HELP_S:g} s",
            met=median(help_s) < HELP_S,
            samples=[round(s, 3) for s in help_s],
            baseline_samples=[round(s, 3) for s in bare_s],
        ),
        Row(
            scenario,
            f"mailer status --json, {planned:,.0f} deliveries planned, wall",
            median(status_s),
            "s",
            baseline=median(status_empty_s),
            baseline_name="status --json, empty database",
            target=f"< {STATUS_S:g} s",
            met=median(status_s) < STATUS_S if full else None,
            samples=[round(s, 3) for s in status_s],
            baseline_samples=[round(s, 3) for s in status_empty_s],
        ),
        Row(
            scenario,
            f"cold start to ready, status --json polled every {POLL_EVERY_S:g} s",
            median(polled),
            "s",
            baseline=median(alone),
            baseline_name="the same start, not polled",
            target=f"< {COLD_POLLED_S:g} s",
            met=median(polled) < COLD_POLLED_S if full else None,
            note=_calls(during),
            samples=[round(s, 3) for s in polled],
            baseline_samples=[round(s, 3) for s in alone],
        ),
    ]


def _calls(during: list[float]) -> str:
    if not during:
        return "no status call ended during the starts"
    return (
        f"{len(during)} status calls during the starts: median {median(during):.2f} s, "
        f"p90 {percentile(during, 90):.2f} s"
    )
