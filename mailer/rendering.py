"""Rendering where it can be stopped: a pool of worker processes with a deadline.

Templates are the organisers' code, and the sandbox cannot bound what it costs: two nested
`range(100000)` loops run for hours, `"x" * 300000000` takes 300 MB at once, a macro that
calls itself runs out of stack. So mails are rendered in worker processes (render_worker.py).
The service waits for a worker without holding its event loop, and a worker that overruns
RENDER_DEADLINE_S is killed and replaced (a fresh interpreter: ~0.3 s of CPU, only for a
runaway template); a worker's memory is capped (render_worker.MEMORY_HEADROOM) and its
output is capped as it streams (template_faults.MAX_PART_CHARS).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from pathlib import Path
from typing import Any

from mailer.errors import InputError, MailerError
from mailer.events import Event, Mail, Recipient
from mailer.render import Rendered, Renderer
from mailer.render_worker import PARTS, Worker

# A mail's three parts render in ~1 ms; 5 s is thousands of times that, and still short
# enough that a runaway template delays the mail behind it only a little.
RENDER_DEADLINE_S = 5.0
# Rendering workers at most, whatever `connections` says: renders take ~0.3 ms and the
# machines we plan for have two cores; a second one keeps mail going while one is held by
# a runaway template. Each costs ~35 MB.
MAX_WORKERS = 2


class RenderPool:
    """Renders mails in up to `size` worker processes, started when first needed."""

    def __init__(self, templates_dir: Path, *, default_language: str, size: int = 1) -> None:
        self.templates_dir = Path(templates_dir)
        self.default_language = default_language
        self.size = max(1, min(size, MAX_WORKERS))
        self.deadline_s = RENDER_DEADLINE_S
        self._idle: list[Worker] = []
        self._all: weakref.WeakSet[Worker] = weakref.WeakSet()
        self._slots: asyncio.Semaphore | None = None
        self._names = Renderer(self.templates_dir, default_language=default_language)
        # Mails whose rendering overran (or killed its worker), by (event id, mail name): the
        # event version, its template files as they were, the error. One runaway template to
        # 200 people must not hold the workers 200 times 5 s while everyone else's mail waits.
        self._runaways: dict[tuple[str, str], tuple[Event, list[Any], str]] = {}

    def workers(self) -> list[Worker]:
        return list(self._all)

    async def warm_up(self) -> None:
        """Start the workers now (a thread each: a fresh interpreter takes ~0.2 s), so that
        the first mail due after a start does not wait for one (bench: 220 ms late)."""
        while len(self._all) < self.size:
            self._idle.append(await asyncio.to_thread(self._start))

    async def render(self, event: Event, mail: Mail, recipient: Recipient) -> Rendered:
        """Render in a worker while the event loop goes on; InputError if the template is at
        fault (also when it overran its time, output or memory)."""
        self._refuse_runaway(event, mail, recipient)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            for attempt in (1, 2):
                idle = self._take_idle()
                worker = idle if idle is not None else await asyncio.to_thread(self._start)
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
        self._refuse_runaway(event, mail, recipient)
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
            worker.kill()
        self._idle.clear()

    async def _exchange(
        self, worker: Worker, event: Event, mail: Mail, recipient: Recipient
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
        self, worker: Worker, event: Event, mail: Mail, recipient: Recipient
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

    def _take_idle(self) -> Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.is_alive():
                return worker
            worker.kill()
        return None

    def _start(self) -> Worker:
        worker = Worker(self.templates_dir, self.default_language)
        self._all.add(worker)
        return worker

    def _result(self, reply: tuple[Any, ...], event: Event, mail: Mail) -> Rendered:
        if reply[0] == "ok":
            rendered: Rendered = reply[1]
            return rendered
        _, message, key = reply
        raise InputError(message, source=event.source, key=key)

    def _overran(self, worker: Worker, event: Event, mail: Mail, who: Recipient) -> InputError:
        what, key = self._part(worker, event, mail, who)
        limit = f"{self.deadline_s:g} s"
        message = f"rendering for {who.address}: {what} took longer than {limit} (the limit)"
        return self._runaway(event, mail, who, InputError(message, source=event.source, key=key))

    def _died(self, worker: Worker, event: Event, mail: Mail, who: Recipient) -> InputError:
        what, key = self._part(worker, event, mail, who)
        code = worker.exitcode
        message = f"rendering for {who.address}: {what} stopped its renderer (exit code {code})"
        return self._runaway(event, mail, who, InputError(message, source=event.source, key=key))

    def _runaway(self, event: Event, mail: Mail, who: Recipient, error: InputError) -> InputError:
        """Remember a mail whose rendering had to be stopped; the error, to raise."""
        self._runaways[event.id, mail.name] = (
            event,
            self._identities(event, mail, who),
            str(error.message),
        )
        return error

    def _refuse_runaway(self, event: Event, mail: Mail, who: Recipient) -> None:
        """Fail at once a mail already stopped for this version of the event and templates;
        editing either tries again."""
        known = self._runaways.get((event.id, mail.name))
        if known is None:
            return
        if known[0] is event and known[1] == self._identities(event, mail, who):
            message = (
                f"not rendered for {who.address}: earlier, {known[2]}; "
                "tried again once the template or the event file changes"
            )
            raise InputError(message, source=event.source, key=f"{mail.key}.template")
        del self._runaways[event.id, mail.name]

    def _identities(self, event: Event, mail: Mail, who: Recipient) -> list[Any]:
        """The mail's template files as they are now (device, inode, modification time)."""
        try:
            files = self._names.template_files(event, mail, who)
        except MailerError:
            return []
        found: list[tuple[int, int, int] | None] = []
        for _, shown in files:
            try:
                status = os.stat(self.templates_dir.parent / shown)
            except OSError:
                found.append(None)
            else:
                found.append((status.st_dev, status.st_ino, status.st_mtime_ns))
        return found

    def _part(self, worker: Worker, event: Event, mail: Mail, who: Recipient) -> tuple[str, str]:
        """The file (or the subject) a worker was rendering, and its key."""
        part = PARTS[worker.part[0]]
        if part == "subject":
            return "the subject", f"{mail.key}.subject"
        try:
            files = self._names.template_files(event, mail, who)
        except MailerError:
            files = []
        named = [file for kind, file in files if kind == part or not part]
        return " / ".join(named) or f"template {mail.template!r}", f"{mail.key}.template"


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
