"""`mailer run` as deployed, plus a probe on its event loop that reports every stall.

    python -m bench.probed run -c config.toml

The same command-line entry point (`mailer.cli.main`); the only addition is one task that
sleeps PROBE_S at a time and writes a line to stderr whenever it woke REPORT_MS or more
late: the event loop was blocked that long, and so was everything due meanwhile (a
wake-up, a signal, a reply from the server). Cost: ~200 wake-ups a second, well under 1%
of a core.
"""

from __future__ import annotations

import asyncio
import sys

PROBE_S = 0.005
REPORT_MS = 10.0
PREFIX = "bench-probe: loop blocked "
STARTED = "bench-probe: loop started"  # imports done, nothing planned yet
_tasks: set[asyncio.Task[None]] = set()


async def _probe() -> None:
    loop = asyncio.get_running_loop()
    print(STARTED, file=sys.stderr, flush=True)
    while True:
        before = loop.time()
        await asyncio.sleep(PROBE_S)
        late_ms = (loop.time() - before - PROBE_S) * 1000
        if late_ms >= REPORT_MS:
            print(f"{PREFIX}{late_ms:.1f} ms", file=sys.stderr, flush=True)


def stall_ms(line: str) -> float | None:
    """The stall a probe line reports, or None for any other line."""
    if not line.startswith(PREFIX):
        return None
    return float(line.removeprefix(PREFIX).split()[0])


class ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    """Every loop it makes (the one `asyncio.run` in the CLI makes) starts with the probe."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()

        def start() -> None:
            task = loop.create_task(_probe())
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)

        loop.call_soon(start)
        return loop


def run() -> None:
    from mailer.cli import main  # here: the driver imports this module for `stall_ms` only

    asyncio.set_event_loop_policy(ProbedPolicy())
    sys.argv[0] = "mailer"
    main()


if __name__ == "__main__":
    run()
