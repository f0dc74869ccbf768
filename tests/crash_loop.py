"""The crash loop: a real `mailer run` killed with -9 at seeded moments until all is sent.

Used by tests/test_crash.py (short) and by `make soak` (`python -m tests.crash_loop`, long):
asserts from the sink's own record and the database that every delivery arrived at least
once, that duplicates stay within `connections` per kill, and that the database agrees.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.project import REPO, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer, serve_smtp


@dataclass(frozen=True)
class Figures:
    seed: int
    deliveries: int
    kills: int
    duplicates: int
    connections: int

    def __str__(self) -> str:
        return (
            f"seed {self.seed}: {self.deliveries} deliveries, {self.kills} kill -9 survived, "
            f"{self.duplicates} duplicates (bound {self.kills * self.connections})"
        )


@asynccontextmanager
async def mailer_run(root: Path, server: SmtpServer) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m mailer run` in its own process, trusting the test CA like a system CA."""
    ca_file = root / "ca.pem"
    server.ca.cert_pem.write_to_path(str(ca_file))
    env = {
        **os.environ,
        "MAILER_SMTP_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(ca_file),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "mailer", "run", "-c", str(root / "config.toml")]
    with (root / "log.txt").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL, stderr=log
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def db_states(root: Path) -> collections.Counter[str]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return collections.Counter(s for (s,) in db.execute("SELECT state FROM deliveries"))


async def wait_for(condition, *, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the crash loop made no progress")
        await asyncio.sleep(0.01)


async def crash_loop(
    root: Path, server: SmtpServer, *, people: int, kills: int, seed: int, connections: int = 4
) -> Figures:
    """Kill -9 the service `kills` times at seeded moments, then let it finish."""
    rng = random.Random(seed)
    due = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    make_project(root, transport=smtp_transport(server.port), connections=connections)
    write_event(root, "seminarium", timed_event(due, people=people))
    # Kill after seeded numbers of received messages, spread over the first nine tenths.
    targets = sorted(rng.sample(range(1, int(people * 0.9)), kills))
    for target in targets:
        async with mailer_run(root, server) as process:
            await wait_for(lambda t=target: len(server.messages) >= t, timeout_s=60)
            process.kill()
            await process.wait()
    async with mailer_run(root, server) as process:
        await wait_for(lambda: db_states(root) == {"sent": people}, timeout_s=120)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    assert len(received) == people, "a delivery was lost"
    duplicates = sum(received.values()) - people
    assert duplicates <= kills * connections, f"{duplicates} duplicates for {kills} kills"
    assert all(n <= 1 + kills for n in received.values())
    return Figures(seed, people, kills, duplicates, connections)


async def main() -> None:
    parser = argparse.ArgumentParser(description="kill -9 mailer run repeatedly; count losses")
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        async with serve_smtp() as server:
            print(
                await crash_loop(
                    Path(folder), server, people=args.people, kills=args.kills, seed=args.seed
                ),
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
