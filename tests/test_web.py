"""The service's web server (SPEC §12): /metrics against `mailer status --json`, /healthz on
a store that is really gone, the login, read-only methods, headers, a taken port. A real
server on 127.0.0.1 and a free port, real HTTP, a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from mailer.cli import main
from mailer.clock import ManualClock
from mailer.config_web import WebSettings
from mailer.engine import Engine
from mailer.web import SECURITY_HEADERS, serve_page
from tests.project import make_project, write_event
from tests.test_engine import INVITATION_DUE, REMINDER_DUE, engine_at

BROKEN = 'title = "Trasig"\nstarts = 2027-06-16T09:00:00\n[[mail]]\nname = 1\n'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def page(engine: Engine, web: WebSettings | None = None) -> AsyncIterator[str]:
    """The server on a free port until the block ends; its base URL once it answers."""
    web = web or WebSettings(listen=f"127.0.0.1:{free_port()}")
    server = asyncio.create_task(serve_page(web, engine))
    base = f"http://{web.listen}"
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(200):  # at most ~10 s
                try:
                    async with client.get(base + "/healthz"):
                        break
                except aiohttp.ClientConnectionError:
                    assert not server.done(), server
                    await asyncio.sleep(0.05)
        yield base
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def get(url: str, method: str = "GET", **kwargs: object) -> tuple[int, dict, str]:
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url, **kwargs) as reply,  # type: ignore[arg-type]
    ):
        return reply.status, dict(reply.headers), await reply.text()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def project(tmp_path: Path) -> Path:
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    write_event(tmp_path, "trasig", BROKEN)
    return tmp_path


async def test_metrics_agree_with_status_json(tmp_path: Path):
    clock = ManualClock(INVITATION_DUE)
    async with engine_at(project(tmp_path), clock) as engine:
        await engine.step()  # the invitation goes to both
        clock.set(REMINDER_DUE + timedelta(minutes=10))  # the reminder is 10 minutes late
        await engine.store.beat(clock.now().timestamp(), planner=True)  # as a running node
        async with page(engine) as base:
            status, headers, text = await get(base + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    command = ["status", "-c", str(tmp_path / "config.toml"), "--json"]
    shown = await asyncio.to_thread(CliRunner().invoke, main, command)  # its own loop
    by_state: dict[str, int] = {}
    for event in json.loads(shown.output)["events"]:
        for mail in event["mails"]:
            for state, count in mail["counts"].items():
                by_state[state] = by_state.get(state, 0) + count
    assert by_state["sent"] == 2 and by_state["scheduled"] == 2
    for state, count in by_state.items():
        assert samples[("mailer_deliveries", (("state", state),))] == count
    assert samples[("mailer_messages_sent_total", ())] == 2
    assert samples[("mailer_attempts_total", (("verdict", "sent"),))] == 2
    assert samples[("mailer_attempts_total", (("verdict", "retry"),))] == 0
    assert samples[("mailer_oldest_due_age_seconds", ())] == 600
    errors = sum(1 for event in json.loads(shown.output)["events"] if event["error"])
    assert samples[("mailer_events_in_error", ())] == errors == 1
    nodes = json.loads(shown.output)["nodes"]
    assert samples[("mailer_nodes_live", ())] == sum(n["live"] for n in nodes) == 1
    assert samples[("mailer_planner", ())] == 1 and [n["planner"] for n in nodes] == [True]


async def test_health_is_ok_and_503_once_the_store_is_closed(tmp_path: Path):
    async with (
        engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine,
        page(engine) as base,
    ):
        assert (await get(base + "/healthz"))[0] == 200
        await engine.store.close()
        status, _, text = await get(base + "/healthz")
    assert (status, text) == (503, "the database does not answer\n")


async def test_health_is_503_once_the_database_file_is_deleted(tmp_path: Path):
    async with (
        engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine,
        page(engine) as base,
    ):
        assert (await get(base + "/healthz"))[0] == 200
        (tmp_path / "var" / "mailer.sqlite3").unlink()
        assert (await get(base + "/healthz"))[0] == 503


async def test_a_login_guards_everything_but_health(tmp_path: Path):
    web = WebSettings(
        listen=f"127.0.0.1:{free_port()}",
        username="arr",
        password_env="MAILER_WEB_PASSWORD",
        password=SecretStr("rätt lösen"),
    )
    right = basic("arr", "rätt lösen")
    async with (
        engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine,
        page(engine, web) as base,
    ):
        for path in ("/", "/metrics"):
            status, headers, _ = await get(base + path)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith('Basic realm="mailer"')
            assert (await get(base + path, headers=basic("arr", "fel")))[0] == 401
            assert (await get(base + path, headers=basic("arx", "rätt lösen")))[0] == 401
            assert (await get(base + path, headers=right))[0] == 200
            bad = {"Authorization": "Basic !!!not base64"}
            assert (await get(base + path, headers=bad))[0] == 401
        assert (await get(base + "/healthz"))[0] == 200


async def test_only_get_and_head_and_every_reply_has_the_security_headers(tmp_path: Path):
    database = tmp_path / "var" / "mailer.sqlite3"
    async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
        before = table_dump(database)
        async with page(engine) as base:
            replies = [
                await get(base + p, m)
                for p in ("/", "/metrics", "/healthz", "/x")
                for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
            ]
        assert table_dump(database) == before  # no request changed anything
    statuses = {status for status, _, _ in replies}
    assert statuses == {200, 404, 405}
    for status, headers, _ in replies:
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (status, name)
    refused = [headers for status, headers, _ in replies if status == 405]
    assert all(headers["Allow"] == "GET,HEAD" for headers in refused)


def table_dump(database: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as db:
        return (
            db.execute("SELECT * FROM deliveries ORDER BY id").fetchall()
            + db.execute("SELECT * FROM events ORDER BY id").fetchall()
        )


async def test_a_taken_port_is_said_once_and_sending_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
            with caplog.at_level(logging.INFO, logger="mailer"):
                await asyncio.wait_for(serve_page(WebSettings(listen=listen), engine), 10)
            sent = await engine.step()
    said = [r.getMessage() for r in caplog.records if "web page" in r.getMessage()]
    assert said == [
        f"web page not served: {listen} is in use (another mailer on this machine?); "
        f"sending goes on"
    ]
    assert sent.handled == 2
