"""A rendering worker process: the service's handle on one (`Worker`), and its own loop (`serve`).

A worker is a fresh interpreter with its memory capped (MEMORY_HEADROOM above what it needs
at start). It holds the last EVENTS_HELD events it was sent, so each event crosses once per
version (without its recipients), then only the mail and the recipient: one small round trip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import resource
import signal
import socket
import subprocess
import sys
import types
import weakref
from collections import OrderedDict
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from mailer.errors import MailerError
from mailer.events import Event, Mail, Recipient
from mailer.render import Rendered, Renderer
from mailer.text_parts import with_parts

# A worker may grow this far beyond its size at start: ample for 5 MB parts (Python holds
# non-ASCII text at up to 4 bytes a character, and a part exists about twice while joined).
MEMORY_HEADROOM = 256 * 2**20
# Events held by each worker (the catalog holds 16 parsed; the parent mirrors this LRU).
EVENTS_HELD = 16
# What a worker reports it is rendering, so an overrun names the file that overran.
PARTS = ("", "subject", "html", "txt")

# Recipients without extra fields share a read-only empty mapping, which pickle refuses.
ForkingPickler.register(types.MappingProxyType, lambda m: (_read_only, (dict(m),)))

# The folder holding the `mailer` package: a worker imports this very code, not another copy.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
# A fresh interpreter importing Jinja and babel takes ~0.3 s, far longer on a loaded machine;
# that wait is not the template's and does not count against its deadline.
STARTUP_TIMEOUT_S = 60.0


class Worker:
    """One worker process, its end of the socket, and which events it holds.

    A fresh interpreter (`python -c`), not multiprocessing: its forkserver and spawn methods
    import the service's `__main__` again in every worker (the whole CLI, or a half-edited
    file), and forking a service that runs threads is unsafe."""

    def __init__(self, templates_dir: Path, default_language: str) -> None:
        here, there = socket.socketpair()
        part_fd = os.memfd_create("mailer-render-part")
        os.ftruncate(part_fd, 1)
        self.part = mmap.mmap(part_fd, 1)  # holds its own descriptor
        code = (
            f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
            "from mailer.render_worker import serve; serve()"
        )
        args = [str(there.fileno()), str(part_fd), str(templates_dir), default_language]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, *args], pass_fds=(there.fileno(), part_fd)
            )
        finally:
            there.close()
            os.close(part_fd)
        self.conn = Connection(here.detach())
        # Ended however the worker object goes: closed, killed or just dropped.
        self._end = weakref.finalize(self, _end, self.process, self.conn)
        self.held: OrderedDict[str, Event] = OrderedDict()
        if not self.conn.poll(STARTUP_TIMEOUT_S) or self.conn.recv() != "ready":
            self.kill()
            raise OSError("a rendering worker did not start")

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def request(self, event: Event, mail: Mail, recipient: Recipient) -> tuple[Any, ...]:
        """The request for one mail; the event goes along only if this worker lacks it."""
        payload = None
        if self.held.get(event.id) is not event:
            self.held[event.id] = event
            payload = dataclasses.replace(event, recipients=())
        _touch(self.held, event.id)
        # The event's own mail goes as its position (the worker holds the event); a mail
        # made up by a caller goes whole.
        own = next((i for i, m in enumerate(event.mails) if m is mail), None)
        return (event.id, payload, mail if own is None else own, recipient)

    def kill(self) -> None:
        """Stop it now, wherever it is (an overrun, a cancelled wait, shutting down)."""
        self._end()


def _read_only(mapping: dict[str, Any]) -> types.MappingProxyType[str, Any]:
    return types.MappingProxyType(mapping)


def _touch(held: OrderedDict[str, Event], event_id: str) -> None:
    """Most recently used last; the oldest beyond EVENTS_HELD dropped (in both processes)."""
    held.move_to_end(event_id)
    while len(held) > EVENTS_HELD:
        held.popitem(last=False)


def _end(process: subprocess.Popen[bytes], conn: Connection) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    conn.close()
    # Reaped at once: the kernel ends a SIGKILLed process within a few milliseconds.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1.0)


def serve() -> None:
    """A worker (`python -c`, see Worker): render requests until the service's end closes."""
    conn_fd, part_fd, templates_dir, default_language = sys.argv[1:5]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the service to handle
    _cap_memory()
    _yield_to_the_service()
    conn = Connection(int(conn_fd))
    part = mmap.mmap(int(part_fd), 1)
    renderer = Renderer(Path(templates_dir), default_language=default_language)
    renderer.on_part = lambda name: part.__setitem__(0, PARTS.index(name))
    held: OrderedDict[str, Event] = OrderedDict()
    conn.send("ready")
    while True:
        try:
            event_id, payload, mail, recipient = conn.recv()
        except (EOFError, OSError):
            return
        if payload is not None:
            held[event_id] = payload
        _touch(held, event_id)
        event = held[event_id]
        part[0] = 0
        try:
            if isinstance(mail, int):
                mail = event.mails[mail]
            reply: tuple[Any, ...] = ("ok", _encoded(renderer.render_mail(event, mail, recipient)))
        except MailerError as exc:
            reply = ("error", exc.message, exc.key)
        conn.send(reply)


def _encoded(rendered: Rendered) -> Rendered:
    """With its MIME parts (text_parts.with_parts), which the service would otherwise encode
    on its event loop; as it is if they cannot be (the service then says why)."""
    try:
        return with_parts(rendered)
    except (UnicodeError, ValueError):
        return rendered


def _yield_to_the_service() -> None:
    """Rendering is batch work: woken by a request, a worker waits its turn rather than
    preempting the service's event loop on a busy machine (Linux's SCHED_BATCH; no
    privilege needed, and the worker still gets its fair share of the CPU). Profiled on
    the 2-core bench machine, the service's write of each request to the worker went from
    0.6-0.8 ms to 0.3-0.4 ms of waiting."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or refused: as it was
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _cap_memory() -> None:
    """Limit the address space to what the worker has now plus MEMORY_HEADROOM: a template
    asking for more gets a MemoryError (a template fault), not the machine's memory."""
    with contextlib.suppress(OSError, ValueError):
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
