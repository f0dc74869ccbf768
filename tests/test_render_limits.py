"""Templates an organiser got wrong, for real: an endless loop, a flood of output, a macro
that calls itself, a link out of templates/. Each is an error naming the template, in
`mailer check` (promptly, no traceback) and in the service (that delivery fails with the
reason; other mail goes out; the event loop is never held; the service stops on time)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mailer.clock import SystemClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.errors import InputError
from mailer.render import Renderer
from mailer.rendering import RenderPool
from mailer.store import Store
from mailer.text_parts import with_parts
from mailer.transports.smtp import SmtpTransport
from tests.project import REPO, TEMPLATES, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import SmtpServer
from tests.test_render import ANNA, EVENT, mail
from tests.test_service import db_rows, smtp_password, soon, states, until

__all__ = ["smtp_password"]

SUBJECT = "{% block subject %}Hej{% endblock %}\n"
BAD = {
    "loop": SUBJECT + "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "flood": SUBJECT + "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "blob": SUBJECT + "{{ 'x' * 300000000 }}",
    "recursion": SUBJECT + "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}
REASON = {
    "loop": "took longer than",
    "flood": "produced more than 5 MB",
    "blob": "more memory than",
    "recursion": "calls itself too deeply",
}
# Short in the service tests, so each stays a few seconds; `check` runs with the real one.
TEST_DEADLINE_S = 1.5


def project(root: Path, *, connections: int = 2, transport: str | None = None) -> Path:
    """A project with its own copy of the shipped templates plus the bad ones, in the root."""
    shutil.copytree(TEMPLATES, root / "templates")
    for name, text in BAD.items():
        (root / "templates" / f"{name}.txt.j2").write_text(text, encoding="utf-8")
    kwargs = {"connections": connections} | ({"transport": transport} if transport else {})
    config = make_project(root, **kwargs)  # type: ignore[arg-type]
    config.write_text(config.read_text().replace(str(TEMPLATES), "templates"))
    return config


def check(config: Path, *, timeout_s: float) -> tuple[int, str, float]:
    """`mailer check` as a real process: exit code, output, seconds taken."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mailer", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.parametrize("name", ["loop", "flood", "blob", "recursion"])
def test_check_names_a_runaway_template_promptly_without_a_traceback(tmp_path: Path, name: str):
    config = project(tmp_path)
    event = timed_event("2098-01-01T09:00:00Z", people=2).replace(
        'to = ["all"]', f'to = ["all"]\ntemplate = "{name}"'
    )
    write_event(tmp_path, "bad", event)
    code, output, took_s = check(config, timeout_s=45)
    assert code == 1, output
    assert f"templates/{name}.txt.j2" in output and REASON[name] in output, output
    assert "bad.toml" in output and "Traceback" not in output
    if name == "loop":  # stopped once, then not run again for the other recipient
        assert "not rendered for person00001@example.org: earlier, rendering for" in output
    assert took_s < 40  # one deadline (5 s) per mail, not per recipient; a busy machine


@asynccontextmanager
async def running(root: Path, server: SmtpServer) -> AsyncIterator[Engine]:
    """The engine against `server` with 4 connections, its render deadline shortened."""
    project(root, connections=4, transport=smtp_transport(server.port))
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    transport = SmtpTransport(
        settings.transport,
        connections=4,
        max_per_minute=0,
        tls_context=server.client_context(),
    )
    engine = Engine(settings, store=store, transport=transport, clock=SystemClock())
    engine.outbox.pool.deadline_s = TEST_DEADLINE_S
    task = asyncio.create_task(engine.run())
    try:
        yield engine
    finally:
        engine.stop()
        try:
            await asyncio.wait_for(task, timeout=10)
        finally:
            await store.close()


async def heartbeat(gaps: list[float], stop: asyncio.Event) -> None:
    """Records the longest gap between ticks: how long the loop was held."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.02)
        gaps.append(loop.time() - last)
        last = loop.time()


@pytest.mark.parametrize("name", ["loop", "flood", "recursion"])
async def test_the_service_fails_a_runaway_template_and_sends_the_rest(
    tmp_path: Path, smtp_server: SmtpServer, name: str
):
    bad = timed_event(soon(0.5), people=1).replace(
        'to = ["all"]', f'to = ["all"]\ntemplate = "{name}"'
    )
    write_event(tmp_path, "bad", bad)
    write_event(tmp_path, "good", timed_event(soon(0.8), people=2).replace("person", "good"))
    gaps: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(gaps, stop))
    async with running(tmp_path, smtp_server) as engine:
        await until(lambda: len(smtp_server.messages) == 2, timeout_s=15)
        await until(lambda: "sending" not in states(tmp_path).values(), timeout_s=15)
        started = time.monotonic()
        engine.stop()
    stopped_s = time.monotonic() - started
    stop.set()
    await beat
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "good00000@example.org",
        "good00001@example.org",
    ]
    ((state, reply),) = db_rows(
        tmp_path, "SELECT state, last_reply FROM deliveries WHERE event = 'bad'"
    )
    assert state == "failed" and f"templates/{name}.txt.j2" in reply and REASON[name] in reply
    assert max(gaps) < 0.5, f"the event loop was held {max(gaps):.2f} s"
    assert stopped_s < 3.0  # shutdown_grace


async def test_a_render_in_flight_at_shutdown_does_not_hold_the_stop(
    tmp_path: Path, smtp_server: SmtpServer
):
    bad = timed_event(soon(0.3), people=1)
    bad = bad.replace('to = ["all"]', 'to = ["all"]\ntemplate = "loop"')
    write_event(tmp_path, "bad", bad)
    async with running(tmp_path, smtp_server) as engine:
        engine.outbox.pool.deadline_s = 30.0
        await until(lambda: "sending" in states(tmp_path).values())
        started = time.monotonic()
        engine.stop()
    assert time.monotonic() - started < 3.0 + 1.0  # shutdown_grace, and a margin
    assert states(tmp_path) == {"person00000@example.org": "scheduled"}  # back in the queue


@pytest.mark.parametrize("target", ["secret", "/proc/self/environ"])
def test_a_template_linked_out_of_templates_is_refused(tmp_path: Path, target: str):
    templates = tmp_path / "templates"
    templates.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("MAILER_SMTP_PASSWORD=hunter2\n")
    (templates / "invitation.txt.j2").symlink_to(secret if target == "secret" else Path(target))
    (templates / "inside.txt.j2").write_text(SUBJECT + "ok\n")
    (templates / "alias.txt.j2").symlink_to("inside.txt.j2")  # a link inside is fine
    renderer = Renderer(templates, default_language="sv")
    m = mail(attach=(), calendar=False, subject="Hej")
    with pytest.raises(InputError) as caught:
        renderer.render_mail(EVENT, m, ANNA)
    assert "templates/invitation.txt.j2" in str(caught.value) and "outside" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    problems = renderer.check_mail(EVENT, m)
    assert problems and "outside" in str(problems[0])
    alias = mail(attach=(), calendar=False, template="alias", name="alias")
    assert renderer.render_mail(EVENT, alias, ANNA).text == "Hejok\n"


async def test_a_worker_that_dies_is_replaced(tmp_path: Path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "invitation.txt.j2").write_text(SUBJECT + "Hej {{ recipient.name }}\n")
    pool = RenderPool(templates, default_language="sv", size=1)
    m = mail(attach=(), calendar=False)
    try:
        assert (await pool.render(EVENT, m, ANNA)).text == "HejHej Anna Andersson\n"
        for worker in pool.workers():
            worker.kill()
        assert (await pool.render(EVENT, m, ANNA)).text == "HejHej Anna Andersson\n"
        assert pool.render_now(EVENT, m, ANNA).subject == "Hej"
    finally:
        pool.close()


async def test_workers_warmed_up_at_a_start_render_the_first_mail(tmp_path: Path):
    """`mailer run` starts the workers once its plan is in force (issue 18): the first mail
    due does not wait for an interpreter to start."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "invitation.txt.j2").write_text(SUBJECT + "Hej {{ recipient.name }}\n")
    pool = RenderPool(templates, default_language="sv", size=2)
    try:
        await pool.warm_up()
        warm = set(pool.workers())
        assert len(warm) == 2 and all(w.is_alive() for w in warm)
        await pool.warm_up()  # once is enough
        m = mail(attach=(), calendar=False)
        assert (await pool.render(EVENT, m, ANNA)).text == "HejHej Anna Andersson\n"
        assert set(pool.workers()) == warm
    finally:
        pool.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux only")
def test_a_worker_renders_as_batch_work_beside_the_service(tmp_path: Path):
    """Woken by a request, a worker must not preempt the service's event loop."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "invitation.txt.j2").write_text(SUBJECT + "Hej {{ recipient.name }}\n")
    pool = RenderPool(templates, default_language="sv", size=1)
    try:
        assert pool.render_now(EVENT, mail(attach=(), calendar=False), ANNA).subject == "Hej"
        (worker,) = pool.workers()
        assert os.sched_getscheduler(worker.process.pid) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the service itself as it was
    finally:
        pool.close()


async def test_a_worker_sends_back_the_parts_encoded(tmp_path: Path):
    """The quoted-printable parts come from the worker, as build_message would make them."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "invitation.txt.j2").write_text(SUBJECT + "Hej {{ recipient.name }}\n")
    pool = RenderPool(templates, default_language="sv", size=1)
    try:
        rendered = await pool.render(EVENT, mail(attach=(), calendar=False), ANNA)
    finally:
        pool.close()
    assert rendered.parts == with_parts(dataclasses.replace(rendered, parts=None)).parts
    assert rendered.parts is not None and b"Hej Anna Andersson" in rendered.parts[0]
