"""The service under test: `python -m mailer run` as deployed, or the Engine in this process.

The subprocess is the real command line (through bench/probed.py, which adds a probe that
reports event-loop stalls): its start-up, planning and memory are what an operator gets.
Ready is the log line `running: N events in force`, which `Engine.run` writes at INFO once
everything is planned and the first wake-up is armed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench.probed import STARTED, stall_ms
from bench.project import REPO
from mailer.clock import SystemClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.store import Store
from mailer.transports.smtp import SmtpTransport

READY = "running: "
STOP_TIMEOUT_S = 30.0


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB, from /proc."""
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """A running `mailer run`: its log lines with the time each arrived, and readiness."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.started = time.perf_counter()
        self.ready = asyncio.Event()
        self.ready_s: float | None = None
        self.stalls_before_ready: list[float] = []  # ms, while starting and planning
        self.stalls_after_ready: list[float] = []
        # VmRSS/VmHWM the moment the loop started (imports done) and the moment it was ready
        self.memory_at: dict[str, dict[str, float]] = {}
        self._log_path = log_path
        self._reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self) -> None:
        assert self.process.stderr is not None
        with self._log_path.open("ab") as log:
            while line := await self.process.stderr.readline():
                log.write(line)
                text = line.decode("utf-8", "replace")
                stall = stall_ms(text)
                if text.startswith(STARTED):
                    self.memory_at["loop started"] = memory_mb(self.pid)
                    continue
                if stall is not None:
                    ready = self.ready.is_set()
                    (self.stalls_after_ready if ready else self.stalls_before_ready).append(stall)
                    continue
                if not self.ready.is_set() and READY in text:
                    self.ready_s = time.perf_counter() - self.started
                    self.memory_at["ready"] = memory_mb(self.pid)
                    self.ready.set()

    async def wait_ready(self, *, timeout_s: float) -> float:
        """Seconds from spawn to `running:`; the log tail if it never comes."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        except TimeoutError:
            tail = self._log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"mailer run not ready in {timeout_s} s; log ends:\n{tail}"
            ) from None
        assert self.ready_s is not None
        return self.ready_s

    async def stop(self) -> int:
        """SIGTERM, as systemd stops it (woken first if a scenario froze it); SIGKILL if
        it does not exit in time."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return self.process.returncode or 0


@asynccontextmanager
async def mailer_run(
    root: Path, *, log_name: str = "log.txt", probe: bool = True
) -> AsyncIterator[Service]:
    """`mailer run -c config.toml` in `root` (with the loop probe unless `probe` is False:
    several nodes side by side need no stall figures), stopped on the way out."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.probed" if probe else "mailer",
        "run",
        "-c",
        str(root / "config.toml"),
        cwd=root,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    service = Service(process, root / log_name)
    try:
        yield service
    finally:
        await service.stop()


def delivery_states(root: Path) -> dict[str, int]:
    """Counts per state in the project's database (read-only; WAL lets us read alongside)."""
    uri = f"file:{root / 'var' / 'mailer.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"))


@contextlib.contextmanager
def logged_as_deployed(path: Path) -> Iterator[None]:
    """Log at INFO with `mailer run`'s format (one line per delivery), to a file not a tty."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


async def send_in_process(root: Path) -> dict[str, float]:
    """Plan every event file and send all that is due through the real Engine, SmtpTransport
    and Store (group commit, WAL): seconds for planning and for sending, and how many sent."""
    settings = load_settings(root / "config.toml")
    clock = SystemClock()
    with logged_as_deployed(root / "log.txt"):
        started = time.perf_counter()
        store = await Store.open(settings.paths.database)
        transport = SmtpTransport(
            settings.transport,  # type: ignore[arg-type]
            connections=settings.sending.connections,
            max_per_minute=settings.sending.max_per_minute,
        )
        engine = Engine(settings, store=store, transport=transport, clock=clock)
        try:
            await engine.load_all()
            planned = time.perf_counter()
            sent = (await engine.step()).handled
            finished = time.perf_counter()
        finally:
            await engine.close()
            await store.close()
    return {"plan_s": planned - started, "send_s": finished - planned, "sent": sent}
