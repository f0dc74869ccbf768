"""Rendering where it can be stopped: worker processes with a deadline and a memory cap.

Templates are the organisers' code, and the sandbox cannot bound what it costs: two nested
`range(100000)` loops run for hours, `"x" * 300000000` takes 300 MB at once, a macro that
calls itself runs out of stack. So mails are rendered in worker processes. The service waits
for a worker without holding its event loop, and a worker that overruns RENDER_DEADLINE_S is
killed and replaced (from the forkserver: ~20 ms); a worker's memory is capped (MEMORY_HEADROOM
above what it needs at start) and its output is capped as it streams (render.MAX_PART_CHARS).
Each worker is sent an event once per version (without its recipients), then only the mail and
the recipient: a render costs one small round trip (~0.1 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import resource
import signal
import types
import weakref
from collections import OrderedDict
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from mailer.errors import InputError, MailerError
from mailer.events import Event, Mail, Recipient
from mailer.render import Rendered, Renderer

# A mail's three parts render in ~1 ms; 5 s is thousands of times that, and still short
# enough that a runaway template delays the mail behind it only a little.
RENDER_DEADLINE_S = 5.0
# A worker may grow this far beyond its size at start: ample for 5 MB parts (Python holds
# non-ASCII text at up to 4 bytes a character, and a part exists about twice while joined).
MEMORY_HEADROOM = 256 * 2**20
# Events held by each worker (the catalog holds 16 parsed; the parent mirrors this LRU).
EVENTS_HELD = 16
# What a worker reports it is rendering, so an overrun names the file that overran.
_PARTS = ("", "subject", "html", "txt")

# Recipients without extra fields share a read-only empty mapping, which pickle refuses.
ForkingPickler.register(types.MappingProxyType, lambda m: (_read_only, (dict(m),)))

_context = multiprocessing.get_context("forkserver")
# The forkserver imports this once; each worker forked from it starts with it loaded.
_context.set_forkserver_preload(["mailer.render"])


class _Worker:
    """One worker process, its end of the pipe, and which events it holds."""

    def __init__(self, templates_dir: Path, default_language: str) -> None:
        here, there = _context.Pipe()
        self.part = _context.RawValue("b", 0)
        self.process = _context.Process(
            target=_serve,
            args=(there, self.part, str(templates_dir), default_language),
            name="mailer-render",
            daemon=True,
        )
        self.process.start()
        there.close()
        self.conn: Connection = here
        self.held: OrderedDict[str, Event] = OrderedDict()

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
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.conn.close()

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(OSError, ValueError, AssertionError):
            self.process.join(timeout=1.0)


class RenderPool:
    """Renders mails in up to `size` worker processes, started when first needed."""

    def __init__(self, templates_dir: Path, *, default_language: str, size: int = 1) -> None:
        self.templates_dir = Path(templates_dir)
        self.default_language = default_language
        self.size = max(1, size)
        self.deadline_s = RENDER_DEADLINE_S
        self._idle: list[_Worker] = []
        self._all: weakref.WeakSet[_Worker] = weakref.WeakSet()
        self._slots: asyncio.Semaphore | None = None
        self._names = Renderer(self.templates_dir, default_language=default_language)
        # Workers end with the pool, also one nobody closed (a test's engine).
        self._finalizer = weakref.finalize(self, _close_all, self._all)

    def workers(self) -> list[_Worker]:
        return list(self._all)

    async def render(self, event: Event, mail: Mail, recipient: Recipient) -> Rendered:
        """Render in a worker while the event loop goes on; InputError if the template is at
        fault (also when it overran its time, output or memory)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            for attempt in (1, 2):
                worker = self._take_idle() or await asyncio.to_thread(self._start)
                try:
                    reply = await self._exchange(worker, event, mail, recipient)
                except BaseException:
                    worker.kill()  # mid-render: its reply would come to the next request
                    raise
                if reply is not None:
                    self._idle.append(worker)
                    return self._result(reply, event, mail)
                worker.kill()  # it died: once more in a fresh one, then it is the template's
                if attempt == 2:
                    raise self._died(worker, event, mail, recipient)
        raise AssertionError("unreachable")

    def render_now(self, event: Event, mail: Mail, recipient: Recipient) -> Rendered:
        """The same, blocking (`check`, `preview`: there is no loop to keep going)."""
        for attempt in (1, 2):
            worker = self._take_idle() or self._start()
            reply = self._exchange_now(worker, event, mail, recipient)
            if reply is not None:
                self._idle.append(worker)
                return self._result(reply, event, mail)
            worker.kill()
            if attempt == 2:
                raise self._died(worker, event, mail, recipient)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """End every worker (the engine at shutdown, `check` when done)."""
        for worker in list(self._all):
            worker.close()
        self._idle.clear()

    async def _exchange(
        self, worker: _Worker, event: Event, mail: Mail, recipient: Recipient
    ) -> tuple[Any, ...] | None:
        """Send the request and wait, off the loop, for the reply; None if the worker died."""
        loop = asyncio.get_running_loop()
        try:
            worker.conn.send(worker.request(event, mail, recipient))
        except OSError:  # it died while idle: not this mail's fault
            return None
        readable: asyncio.Future[None] = loop.create_future()
        fd = worker.conn.fileno()
        loop.add_reader(fd, _settle, readable)
        try:
            async with asyncio.timeout(self.deadline_s):
                await readable
        except TimeoutError:
            worker.kill()
            raise self._overran(worker, event, mail, recipient) from None
        finally:
            loop.remove_reader(fd)
        try:
            reply: tuple[Any, ...] = worker.conn.recv()
        except (EOFError, OSError):
            return None
        return reply

    def _exchange_now(
        self, worker: _Worker, event: Event, mail: Mail, recipient: Recipient
    ) -> tuple[Any, ...] | None:
        try:
            worker.conn.send(worker.request(event, mail, recipient))
            if not worker.conn.poll(self.deadline_s):
                worker.kill()
                raise self._overran(worker, event, mail, recipient)
            reply: tuple[Any, ...] = worker.conn.recv()
        except (EOFError, OSError):
            return None
        return reply

    def _take_idle(self) -> _Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.is_alive():
                return worker
            worker.kill()
        return None

    def _start(self) -> _Worker:
        worker = _Worker(self.templates_dir, self.default_language)
        self._all.add(worker)
        return worker

    def _result(self, reply: tuple[Any, ...], event: Event, mail: Mail) -> Rendered:
        if reply[0] == "ok":
            rendered: Rendered = reply[1]
            return rendered
        _, message, key = reply
        raise InputError(message, source=event.source, key=key)

    def _overran(self, worker: _Worker, event: Event, mail: Mail, who: Recipient) -> InputError:
        what, key = self._part(worker, event, mail, who)
        limit = f"{self.deadline_s:g} s"
        message = f"rendering for {who.address}: {what} took longer than {limit} (the limit)"
        return InputError(message, source=event.source, key=key)

    def _died(self, worker: _Worker, event: Event, mail: Mail, who: Recipient) -> InputError:
        what, key = self._part(worker, event, mail, who)
        code = worker.process.exitcode
        message = f"rendering for {who.address}: {what} stopped its renderer (exit code {code})"
        return InputError(message, source=event.source, key=key)

    def _part(self, worker: _Worker, event: Event, mail: Mail, who: Recipient) -> tuple[str, str]:
        """The file (or the subject) a worker was rendering, and its key."""
        part = _PARTS[worker.part.value]
        if part == "subject":
            return "the subject", f"{mail.key}.subject"
        try:
            files = self._names.template_files(event, mail, who)
        except MailerError:
            files = []
        named = [file for kind, file in files if kind == part or not part]
        return " / ".join(named) or f"template {mail.template!r}", f"{mail.key}.template"


def _read_only(mapping: dict[str, Any]) -> types.MappingProxyType[str, Any]:
    return types.MappingProxyType(mapping)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _touch(held: OrderedDict[str, Event], event_id: str) -> None:
    """Most recently used last; the oldest beyond EVENTS_HELD dropped (in both processes)."""
    held.move_to_end(event_id)
    while len(held) > EVENTS_HELD:
        held.popitem(last=False)


def _close_all(workers: weakref.WeakSet[_Worker]) -> None:
    for worker in list(workers):
        worker.kill()


def _serve(conn: Connection, part: Any, templates_dir: str, default_language: str) -> None:
    """A worker: render requests until the service's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the service to handle
    _cap_memory()
    renderer = Renderer(Path(templates_dir), default_language=default_language)
    renderer.on_part = lambda name: setattr(part, "value", _PARTS.index(name))
    held: OrderedDict[str, Event] = OrderedDict()
    while True:
        try:
            event_id, payload, mail, recipient = conn.recv()
        except (EOFError, OSError):
            return
        if payload is not None:
            held[event_id] = payload
        _touch(held, event_id)
        event = held[event_id]
        part.value = 0
        try:
            if isinstance(mail, int):
                mail = event.mails[mail]
            reply: tuple[Any, ...] = ("ok", renderer.render_mail(event, mail, recipient))
        except MailerError as exc:
            reply = ("error", exc.message, exc.key)
        conn.send(reply)


def _cap_memory() -> None:
    """Limit the address space to what the worker has now plus MEMORY_HEADROOM: a template
    asking for more gets a MemoryError (a template fault), not the machine's memory."""
    with contextlib.suppress(OSError, ValueError):
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
