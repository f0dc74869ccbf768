"""Scenario 9: how soon the other nodes cover for one that is gone (SPEC §9), on one
PostgreSQL database.

Failover: three nodes; the planner is killed (-9) and at once a new event file is written.
The figure is kill → another node is the planner (`nodes.planner`) and the new event is in
the plan (its deliveries in the database), so the successor has read the folder afresh;
then the killed node is started again (as a follower) and the next round begins. Each
kill comes after a random pause (0–2 s): at any point of the others' cycle of asking for
the planner's lock.

Lease recovery: two nodes with `[sending] lease = "3s"`, the shortest the setting allows
(with the default 30 s each round would take 30 s and more). One node is frozen (SIGSTOP)
while a mail goes out; the figure is freeze → the last of the deliveries it held arrived at
the sink from the other node (sink clock). The frozen node is woken and the round's mail
finished before the next round, each round freezing the other node.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import psycopg

from bench.context import Context
from bench.nodes import Fleet, node_project, plan_event
from bench.postgres import fresh_database_url, postgres_server
from bench.project import now, people, write_event
from bench.report import Row
from mailer.election import ELECTION_S

ROUNDS, QUICK_ROUNDS = 10, 3
FAILOVER_NODES = 3
TAKEOVER_TARGET_S = 10.0  # SPEC §9: the next node plans within 10 s
LEASE, LEASE_S = "3s", 3.0
FROZEN_RECIPIENTS = 400  # ~2 s of sending at the rates scenario 8 finds
POLL_S = 0.05
PHASES = random.Random(14)  # the same pauses before each kill, run after run


async def _query(db: psycopg.AsyncConnection[Any], sql: str, *params: object) -> list[Any]:
    cursor = await db.execute(sql, params)
    return await cursor.fetchall()


async def _planner(db: psycopg.AsyncConnection[Any], fleet: Fleet) -> str:
    """The one node that plans, once the nodes agree on one that lives."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [str(i) for (i,) in await _query(db, "SELECT id FROM nodes WHERE planner")]
        if len(found) == 1 and fleet.slot_of(found[0]) is not None:
            return found[0]
        await asyncio.sleep(POLL_S)
    raise RuntimeError("no node plans after 60 s; see the node*.log (--keep)")


async def _takeover_s(db: psycopg.AsyncConnection[Any], fleet: Fleet, root: Path, k: int) -> float:
    """One round: kill the planner, edit the folder, time until another plans the edit."""
    killed = await _planner(db, fleet)
    await asyncio.sleep(PHASES.uniform(0, ELECTION_S))  # at any point of the others' cycle
    slot = fleet.slot_of(killed)
    assert slot is not None
    fleet.services[slot].process.kill()
    started = time.perf_counter()
    event = f"edit-{k}"
    write_event(root, event, due=now() + timedelta(days=1), recipients=people(event, 3))
    await fleet.services[slot].process.wait()
    while True:
        planned = await _query(db, "SELECT COUNT(*) FROM deliveries WHERE event = %s", event)
        planner = await _query(db, "SELECT id FROM nodes WHERE planner")
        if planned[0][0] == 3 and planner and planner[0][0] != killed:
            took = time.perf_counter() - started
            break
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"round {k}: the edit not planned 60 s after the kill")
        await asyncio.sleep(POLL_S)
    await fleet.start(slot)
    return took


async def _failover(ctx: Context, server_url: str, rounds: int) -> list[float]:
    root = ctx.folder("failover")
    with fresh_database_url(server_url) as database:
        edits = [f"edit-{k}" for k in range(rounds)]
        node_project(root, port=ctx.sink.port, database=database, events=edits)
        write_event(root, "standing", due=now() + timedelta(days=1), recipients=people("s", 3))
        async with AsyncExitStack() as stack:
            fleet = Fleet(root, stack)
            await fleet.start(*range(FAILOVER_NODES))
            db = await psycopg.AsyncConnection.connect(database, autocommit=True)
            stack.push_async_callback(db.close)
            return [await _takeover_s(db, fleet, root, k) for k in range(rounds)]


async def _freeze_round(
    ctx: Context, db: psycopg.AsyncConnection[Any], database: str, fleet: Fleet, k: int
) -> dict[str, float]:
    """Freeze one node mid-send; how long until another sent what it held."""
    count, event = ctx.size(FROZEN_RECIPIENTS, FROZEN_RECIPIENTS // 2), f"frozen-{k}"
    await ctx.sink.ask("reset")
    await plan_event(fleet.root, database, event, count=count, lead_s=0.5)
    if await ctx.sink.wait_for(count // 5, timeout_s=60, poll_s=0.01) < count // 5:
        raise RuntimeError(f"round {k}: the mail did not start within 60 s")
    victim = fleet.services[k % 2]
    holding = "SELECT recipient FROM deliveries WHERE state = 'sending' AND leased_by LIKE %s"
    for _ in range(100):  # until it is frozen holding some (it may be between two claims)
        victim.process.send_signal(signal.SIGSTOP)
        frozen_at = time.time()
        if held := {a for (a,) in await _query(db, holding, f"% {victim.pid} %")}:
            break
        victim.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError(f"round {k}: node {k % 2} held no delivery whenever it was frozen")
    sent = "SELECT COUNT(*) FROM deliveries WHERE event = %s AND state = 'sent'"
    deadline = time.monotonic() + 60
    while (await _query(db, sent, event))[0][0] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"round {k}: the frozen node's mail not sent by the other in 60 s")
        await asyncio.sleep(POLL_S)
    arrived = await ctx.sink.received(str(fleet.root / f"{event}.tsv"))
    victim.process.send_signal(signal.SIGCONT)
    last = max((at for at, rcpt in arrived if rcpt in held), default=frozen_at)
    await asyncio.sleep(1.0)  # what it had in flight, it finishes now
    twice = await ctx.sink.messages() - count
    return {"recovery_s": last - frozen_at, "held": len(held), "twice": twice}


async def _lease_recovery(ctx: Context, server_url: str, rounds: int) -> list[dict[str, float]]:
    root = ctx.folder("frozen")
    with fresh_database_url(server_url) as database:
        mails = [f"frozen-{k}" for k in range(rounds)]
        node_project(root, port=ctx.sink.port, database=database, events=mails, lease=LEASE)
        async with AsyncExitStack() as stack:
            fleet = Fleet(root, stack)
            await fleet.start(0, 1)
            db = await psycopg.AsyncConnection.connect(database, autocommit=True)
            stack.push_async_callback(db.close)
            return [await _freeze_round(ctx, db, database, fleet, k) for k in range(rounds)]


async def failover(ctx: Context) -> list[Row]:
    rounds = ctx.size(ROUNDS, QUICK_ROUNDS)
    with postgres_server() as server:
        takeovers = await _failover(ctx, server.url, rounds)
        frozen = await _lease_recovery(ctx, server.url, rounds)
    return _rows(takeovers, frozen, judge=not ctx.quick)


def _rows(takeovers: list[float], frozen: list[dict[str, float]], *, judge: bool) -> list[Row]:
    scenario = "9 a node gone"
    worst = max(takeovers)
    recoveries = [round(f["recovery_s"], 2) for f in frozen]
    held = [int(f["held"]) for f in frozen]
    twice = [int(f["twice"]) for f in frozen]
    limit = LEASE_S + 3
    return [
        Row(
            scenario,
            f"planner killed -9 → another plans, folder read afresh (median of {len(takeovers)})",
            median(takeovers),
            "s",
            note=f"worst {worst:.2f} s; {FAILOVER_NODES} nodes; an event file written right "
            "after the kill is in the plan",
            samples=[round(t, 3) for t in takeovers],
        ),
        Row(
            scenario,
            f"planner killed -9 → another plans (worst of {len(takeovers)})",
            worst,
            "s",
            target=f"< {TAKEOVER_TARGET_S:g} s",
            met=worst < TAKEOVER_TARGET_S if judge else None,
            note=f"the others ask for the planner's lock every {ELECTION_S:g} s; each kill "
            "after a pause drawn from 0–2 s, so at any point of their cycle",
            samples=[round(t, 3) for t in takeovers],
        ),
        Row(
            scenario,
            f"node frozen (SIGSTOP) mid-send → its deliveries sent by another "
            f"(worst of {len(frozen)})",
            max(recoveries),
            "s",
            target=f"≤ lease + {limit - LEASE_S:g} s",
            met=max(recoveries) <= limit if judge else None,
            note=f'sending.lease = "{LEASE}" (the shortest allowed; the default 30 s adds '
            f"27 s); median {median(recoveries):.2f} s; held {min(held)}–{max(held)} each "
            f"time, sent twice after SIGCONT {min(twice)}–{max(twice)}",
            samples=recoveries,
            extra={"held": held, "twice": twice},
        ),
    ]
