"""The process the workers that read event files are forked from (reading.py).

Forking the service itself is unsafe: it runs threads (aiosqlite's, the loop's executor), and a
lock one of them held at the fork stays held in the child. A spawned worker is safe but spent
~0.5 s of CPU importing mailer before it read a file, twice at every start on two cores
(issue 18). A fork server imports `mailer.reading` once, and forks each worker from that;
started first thing by `mailer run`, its imports run on the other core while the service
imports its own. Light on purpose: nothing of mailer is imported here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

# What the server imports before it forks anyone: all a worker needs.
PRELOAD = ["mailer.reading"]


def cores() -> int:
    """The cores this process may run on."""
    found = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return found or 1


def reader_context() -> BaseContext:
    """The multiprocessing context workers come from: forked by the server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_reader_server() -> None:
    """Start the server now, if there is a core for workers; else readers() never needs it.
    Where it cannot start, the first pool of workers tries again and says why."""
    if cores() >= 2:
        reader_context()
        with contextlib.suppress(OSError):
            forkserver.ensure_running()
