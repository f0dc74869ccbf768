"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from hypothesis import settings

from mailer.config_transport import SmtpSettings
from tests import postgres, smtpd
from tests.smtpd import SmtpServer, serve_smtp

# `make test` and CI draw the same examples every run, so a red build is never the luck of
# the draw; `make fuzz` draws fresh ones at random.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """A real SMTP server in the test's loop: STARTTLS and AUTH required (tests/smtpd.py)."""
    async with serve_smtp() as server:
        yield server


@pytest.fixture
def smtp_settings() -> Callable[..., SmtpSettings]:
    """`smtp_settings(server, **overrides)`: transport settings that log in to `server`."""
    return smtpd.smtp_settings


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """URL of a real PostgreSQL server for the whole run (session scope):
    `postgresql://postgres@127.0.0.1:PORT/postgres`, a superuser with trust authentication
    on 127.0.0.1 only.

    $MAILER_TEST_POSTGRESQL if set, else a server started here from Debian's binaries
    (tests/postgres.py) and stopped at the end of the run. Without PostgreSQL a test using
    this fixture is skipped with the reason, except in CI (CI=true), where it fails.
    Tests that write should use `fresh_database` instead of this server's `postgres`
    database.
    """
    if url := os.environ.get(postgres.URL_VARIABLE):
        yield url
        return
    pattern = postgres.bindir_pattern(os.environ)
    bindir = postgres.find_bindir(pattern)
    if bindir is None:
        postgres.unavailable(
            f"no PostgreSQL server binaries (looked for initdb in {pattern} "
            "and pg_config --bindir)",
            environ=os.environ,
        )
    with postgres.running_server(bindir) as url:
        yield url


@pytest.fixture
def own_postgresql() -> Iterator[postgres.Cluster]:
    """A PostgreSQL server of this test's own, to stop and start again (a database that goes
    away under the service); skipped without PostgreSQL, except in CI."""
    pattern = postgres.bindir_pattern(os.environ)
    bindir = postgres.find_bindir(pattern)
    if bindir is None:
        postgres.unavailable(f"no PostgreSQL server binaries in {pattern}", environ=os.environ)
    with postgres.running_cluster(bindir, durable=True) as cluster:
        yield cluster


@pytest.fixture
def fresh_database(postgresql_url: str) -> Iterator[str]:
    """URL of a new, empty database on the test server, dropped after the test: use it as
    `paths.database` or with psycopg.connect. Each test gets its own, so none share state."""
    with postgres.fresh_database_url(postgresql_url) as url:
        yield url
