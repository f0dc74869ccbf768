"""Run the benchmarks of issue #8, print the table, write bench/results/latest.json.

python -m bench.run            # full: medians of 3, ~10 minutes on 2 cores
python -m bench.run --quick    # smaller sizes, medians of 3, about a minute
python -m bench.run --only 1,2 # some scenarios
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.answers import answers
from bench.context import Context
from bench.failover import failover
from bench.memory import memory
from bench.nodes import nodes_throughput
from bench.pages import pages
from bench.planning import planning
from bench.punctuality import punctuality
from bench.reload import reload_latency
from bench.report import RESULTS, Row, print_table, write_json
from bench.scale import scale
from bench.sink import Sink
from bench.throughput import REPORT, SMALL, throughput

Scenario = Callable[[Context], Awaitable[list[Row]]]
SCENARIOS: dict[str, Scenario] = {
    "1": lambda ctx: throughput(ctx, SMALL),
    "2": lambda ctx: throughput(ctx, REPORT),
    "3": planning,
    "4": punctuality,
    "5": reload_latency,
    "6": memory,
    "7": pages,
    "8": nodes_throughput,
    "9": failover,
    "10": answers,
    "11": scale,
}


async def run(*, quick: bool, only: list[str], repeats: int, out: Path, keep: bool) -> list[Row]:
    sink = await Sink.start()
    rows: list[Row] = []
    scratch = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    try:
        ctx = Context(sink=sink, scratch=scratch, quick=quick, repeats=repeats)
        for key in only:
            started = time.perf_counter()
            found = await SCENARIOS[key](ctx)
            rows += found
            print_table(found, title=f"scenario {key}: {time.perf_counter() - started:.0f} s")
    finally:
        await sink.close()
        if keep:
            print(f"projects and logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    options = {"quick": quick, "only": only, "repeats": repeats}
    write_json(rows, path=out, options=options)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about a minute")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="e.g. 1,2,4")
    parser.add_argument("--repeats", type=int, default=3, help="medians of this many (>= 3)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the projects and their logs")
    args = parser.parse_args()
    only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = [key for key in only if key not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown} (known: {', '.join(SCENARIOS)})")
    started = time.perf_counter()
    rows = asyncio.run(
        run(quick=args.quick, only=only, repeats=args.repeats, out=args.out, keep=args.keep)
    )
    mode = "quick" if args.quick else "full"
    print_table(rows, title=f"mailer benchmarks ({mode}, medians of {args.repeats})")
    print(f"{time.perf_counter() - started:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
