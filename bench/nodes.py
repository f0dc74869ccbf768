"""Scenario 8: messages per second of 1, 2 and 3 `mailer run` nodes on one PostgreSQL
database against the one sink, and of one node on SQLite (the baseline), in the same run.

Each sample is a fresh project and database: the nodes start with an empty schedules
folder and, once all are ready (and WATCH_SETUP_S more: the planner's watch is set up
after `running:`, as in scenario 5), one event file is written with its mail due LEAD_S
later, so that planning is over before the first message leaves and every node waits for
the same instant. The rate is the sink's: messages from the first to the last arrival.
While they arrive, the CPU of the nodes (each with its render worker), of PostgreSQL (the
postmaster and every backend) and of the sink is read from /proc: on 2 cores, whichever
sums to about 2 is what bounds the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from statistics import median

from bench.context import Context
from bench.postgres import Server, fresh_database_url, postgres_server, rows
from bench.project import make_project, now, people, write_event
from bench.reload import WATCH_SETUP_S
from bench.report import Row
from bench.service import Service, delivery_states, mailer_run

CONNECTIONS = 4
# Quick: 600, not fewer: a node claims up to 100 at a time, and each of 3 should get some.
RECIPIENTS, QUICK_RECIPIENTS = 5000, 600
LEAD_S = 3.0  # written -> due: planning 5,000 takes well under a second
PLAN_WAIT_S = 2.0
READY_TIMEOUT_S = 120.0
SEND_TIMEOUT_S = 600.0
TARGET = 1.6  # issue 14: two nodes at least 1.6 x one node
LAYOUTS = (("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 2), ("PostgreSQL", 3))


def node_project(
    root: Path, *, port: int, database: str | None, events: Iterable[str], lease: str = ""
) -> None:
    """The bench's project (4 connections, no rate limit) on `database` (None: SQLite),
    with `[sending] lease` set if given, and no web page (every node would want its port).

    The folders of the `events` the scenario will write are made now, empty (no event
    yet): files written into a new folder right after it was made are missed by the watch
    now and then (the folder's own creation names no event file; measured: 4 of 20).
    """
    config = make_project(root, port=port, connections=CONNECTIONS)
    for name in events:
        (root / "schedules" / name).mkdir()
    text = config.read_text(encoding="utf-8")
    assert text.endswith("max_per_minute = 0\n"), "[sending] is no longer the last table"
    if database is not None:
        text = text.replace('database = "var/mailer.sqlite3"', f'database = "{database}"')
    if lease:
        text += f'lease = "{lease}"\n'
    text += '\n[web]\nlisten = ""\n'
    config.write_text(text, encoding="utf-8")


@dataclass
class Fleet:
    """The `mailer run` processes of one project, by slot, each logging to node<slot>.log;
    all stopped (woken first, if frozen) when `stack` closes."""

    root: Path
    stack: AsyncExitStack
    services: dict[int, Service] = field(default_factory=dict)

    async def start(self, *slots: int) -> None:
        """Start these nodes at once; return when each has logged that it runs."""
        for slot in slots:
            self.services[slot] = await self.stack.enter_async_context(
                mailer_run(self.root, log_name=f"node{slot}.log", probe=False)
            )
        await asyncio.gather(
            *(self.services[s].wait_ready(timeout_s=READY_TIMEOUT_S) for s in slots)
        )

    async def kill(self, slot: int) -> None:
        process = self.services[slot].process
        process.kill()
        await process.wait()

    def slot_of(self, node_id: str) -> int | None:
        """The slot whose live process a `nodes.id` / `leased_by` names ("host pid token")."""
        pid = int(node_id.rsplit(" ", 2)[1])
        return next((s for s, n in self.services.items() if n.pid == pid), None)

    def pids(self) -> list[int]:
        return [s.pid for s in self.services.values() if s.process.returncode is None]


def tree_cpu_s(roots: Iterable[int]) -> float:
    """CPU seconds (user + system) of these processes and every process below them, with
    the children they have reaped: a backend or worker that ends between two readings is
    counted in its parent's then, so the difference of two readings is the work done."""
    table: dict[int, tuple[int, float, float]] = {}  # pid -> (parent, own, reaped)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            own = (int(fields[11]) + int(fields[12])) / tick
            table[int(entry.name)] = (
                int(fields[1]),
                own,
                (int(fields[13]) + int(fields[14])) / tick,
            )
    below: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        below.setdefault(parent, []).append(pid)
    total, todo = 0.0, [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        total += table[pid][1] + table[pid][2]
        todo += below.get(pid, [])
    return total


@dataclass
class Cpu:
    """CPU seconds of the nodes, the server, the sink and this driver at one moment."""

    parts: dict[str, float]
    at: float
    machine: float  # every core's busy seconds, whoever used them

    @classmethod
    def read(cls, nodes: list[int], server: Server | None, sink: int) -> Cpu:
        parts = {"nodes": tree_cpu_s(nodes), "sink": tree_cpu_s([sink])}
        parts["PostgreSQL"] = tree_cpu_s([server.postmaster]) if server else 0.0
        parts["driver"] = time.process_time()
        return cls(parts, time.perf_counter(), machine_busy_s())

    def cores_since(self, before: Cpu) -> dict[str, float]:
        """Each part's CPU seconds per wall second since `before`: 1.0 is one core busy."""
        wall = self.at - before.at
        cores = {key: (value - before.parts[key]) / wall for key, value in self.parts.items()}
        return cores | {"machine": (self.machine - before.machine) / wall}


def machine_busy_s() -> float:
    """Seconds all cores together spent on anything but idling or waiting for the disk
    (/proc/stat): what the bench's processes took plus whatever else ran meanwhile."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks) - idle - iowait) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def database_for(server: Server | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped afterwards), or None for SQLite."""
    if server is None:
        yield None
    else:
        with fresh_database_url(server.url) as url:
            yield url


async def plan_event(
    root: Path, database: str | None, name: str, *, count: int, lead_s: float
) -> float:
    """Write the event `name`, `count` recipients, its mail due `lead_s` from now, and wait
    until the planner has it in the database; written again (due anew) if it has not within
    PLAN_WAIT_S, as an edit made while the watch was being set up is not seen. Its due time."""
    sql = "SELECT COUNT(*) FROM deliveries WHERE event = " + ("?" if database is None else "%s")
    for _ in range(3):
        due = now() + timedelta(seconds=lead_s)
        write_event(root, name, due=due, recipients=people(name, count))
        deadline = time.monotonic() + PLAN_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if _count(root, database, sql, name) == count:
                return due.timestamp()
    raise RuntimeError(f"{name}: written three times and never planned; see node*.log (--keep)")


def _count(root: Path, database: str | None, sql: str, *params: object) -> int:
    if database is not None:
        return int(rows(database, sql, params)[0][0])
    uri = f"file:{root / 'var' / 'mailer.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return int(db.execute(sql, params).fetchone()[0])


def states(root: Path, database: str | None) -> dict[str, int]:
    if database is None:
        return delivery_states(root)
    return dict(rows(database, "SELECT state, COUNT(*) FROM deliveries GROUP BY state"))


async def until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Until `condition()` holds, looking every 0.1 s; RuntimeError naming `what` if not."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _sample(ctx: Context, server: Server | None, nodes: int, count: int, name: str) -> dict:
    """One layout once: rate at the sink, CPU while sending, each node's share."""
    root = ctx.folder(name)
    with database_for(server) as database:
        node_project(root, port=ctx.sink.port, database=database, events=["bench"])
        async with AsyncExitStack() as stack:
            fleet = Fleet(root, stack)
            await fleet.start(*range(nodes))
            await asyncio.sleep(WATCH_SETUP_S)  # the planner's watch is set up after `running:`
            await ctx.sink.ask("reset")
            due = await plan_event(root, database, "bench", count=count, lead_s=LEAD_S)
            if not await ctx.sink.wait_for(1, timeout_s=LEAD_S + 60, poll_s=0.01):
                raise RuntimeError(f"{name}: nothing sent; see the node*.log there (--keep)")
            sink_pid = ctx.sink.process.pid
            before = Cpu.read(fleet.pids(), server, sink_pid)
            got = await ctx.sink.wait_for(count, timeout_s=SEND_TIMEOUT_S)
            cores = Cpu.read(fleet.pids(), server, sink_pid).cores_since(before)
            await until(
                lambda: states(root, database) == {"sent": count}, timeout_s=60, what="all sent"
            )
            shares = _shares(fleet, database, nodes)
        received = await ctx.sink.received(str(root / "received.tsv"))
    if got != count or len({rcpt for _, rcpt in received}) != count:
        raise RuntimeError(f"{name}: the sink has {got} messages for {count} recipients")
    times = sorted(at for at, _ in received)
    late_s = times[0] - due
    return {"rate": (count - 1) / (times[-1] - times[0]), "cores": cores, "shares": shares,
            "first_late_s": late_s}  # fmt: skip


def _shares(fleet: Fleet, database: str | None, nodes: int) -> list[int]:
    """How many deliveries each slot sent (PostgreSQL keeps the sender in `leased_by`)."""
    if database is None:
        return []
    found: Counter[int | None] = Counter()
    for sender, n in rows(database, "SELECT leased_by, COUNT(*) FROM deliveries GROUP BY 1"):
        found[fleet.slot_of(sender) if sender else None] += n
    return [found[slot] for slot in range(nodes)]


async def nodes_throughput(ctx: Context) -> list[Row]:
    count = ctx.size(RECIPIENTS, QUICK_RECIPIENTS)
    found: dict[tuple[str, int], list[dict]] = {layout: [] for layout in LAYOUTS}
    with postgres_server() as server:
        for repeat in range(ctx.repeats):
            order = LAYOUTS[repeat % len(LAYOUTS) :] + LAYOUTS[: repeat % len(LAYOUTS)]
            for engine, nodes in order:
                on = server if engine == "PostgreSQL" else None
                name = f"nodes-{engine.lower()}-{nodes}-{repeat}"
                found[(engine, nodes)].append(await _sample(ctx, on, nodes, count, name))
    return _rows(found, count, judge=not ctx.quick)


def _note(samples: list[dict]) -> str:
    cores = {key: median(s["cores"][key] for s in samples) for key in samples[0]["cores"]}
    busy = cores.pop("machine")
    total = sum(cores.values())
    parts = " + ".join(f"{key} {value:.2f}" for key, value in cores.items())
    machine = os.cpu_count() or 1
    bound = "the cores bound it" if busy >= 0.85 * machine else "cores to spare"
    note = (
        f"CPU in cores: {parts} = {total:.2f}; whole machine {busy:.2f} of {machine}, "
        f"others {max(busy - total, 0):.2f} ({bound})"
    )
    if len(shares := samples[len(samples) // 2]["shares"]) > 1:
        note += "; shares " + "/".join(f"{n / sum(shares):.0%}" for n in shares)
    return note


def _rows(found: dict[tuple[str, int], list[dict]], count: int, *, judge: bool) -> list[Row]:
    def rate(layout: tuple[str, int]) -> float:
        return float(median(s["rate"] for s in found[layout]))

    sqlite, one = rate(("SQLite", 1)), rate(("PostgreSQL", 1))
    baseline_samples = [round(s["rate"], 1) for s in found[("SQLite", 1)]]
    result = []
    for engine, nodes in LAYOUTS:
        figure, samples = rate((engine, nodes)), found[(engine, nodes)]
        is_baseline = engine == "SQLite"
        what = " (baseline)" if is_baseline else f": {count:,} small, {CONNECTIONS} conns each"
        note = _note(samples)
        if engine == "PostgreSQL" and nodes > 1:
            note = f"{figure / one:.2f}× one PostgreSQL node; {note}"
        judged = nodes == 2 and judge
        result.append(
            Row(
                "8 nodes on PostgreSQL",
                f"{nodes} node{'s' * (nodes > 1)}, {engine}{what}",
                figure,
                "msg/s",
                baseline=None if is_baseline else sqlite,
                baseline_name="" if is_baseline else "1 node, SQLite",
                target=f"≥ {TARGET:g}× one node" if nodes == 2 else "",
                met=figure / sqlite >= TARGET if judged else None,
                note=note,
                samples=[round(s["rate"], 1) for s in samples],
                baseline_samples=[] if is_baseline else baseline_samples,
                extra={"per_repeat": samples},
            )
        )
    return result
