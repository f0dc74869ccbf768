"""The test run's own PostgreSQL server: it answers, listens on 127.0.0.1 only, hands each
test an empty database of its own, and is never silently skipped in CI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests import postgres


def test_the_server_answers_a_query(postgresql_url: str) -> None:
    with psycopg.connect(postgresql_url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_the_server_listens_on_127_0_0_1_only(postgresql_url: str) -> None:
    port = urlsplit(postgresql_url).port
    assert port is not None
    with psycopg.connect(postgresql_url) as connection:
        assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    # Another loopback address reaches a server bound to 0.0.0.0, but not one on 127.0.0.1.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return [name for (name,) in rows]


def _databases(server_url: str) -> set[str]:
    with psycopg.connect(server_url) as connection:
        return {name for (name,) in connection.execute("SELECT datname FROM pg_database")}


def test_each_fresh_database_is_empty_its_own_and_dropped_after(postgresql_url: str) -> None:
    with postgres.fresh_database_url(postgresql_url) as first:
        with psycopg.connect(first) as connection:
            connection.execute("CREATE TABLE left_behind (id int)")
        with postgres.fresh_database_url(postgresql_url) as second:
            assert first != second
            assert _tables(first) == ["left_behind"]
            assert _tables(second) == []
        idle = psycopg.connect(first)  # a session still open does not keep it alive
    idle.close()
    names = {urlsplit(url).path.lstrip("/") for url in (first, second)}
    assert not names & _databases(postgresql_url)


def test_the_fresh_database_fixture_gives_a_url_to_an_empty_database(fresh_database: str) -> None:
    assert urlsplit(fresh_database).path.startswith("/test_")
    assert _tables(fresh_database) == []


@pytest.mark.parametrize(
    ("environ", "outcome"), [({"CI": "true"}, pytest.fail.Exception), ({}, pytest.skip.Exception)]
)
def test_without_postgresql_a_developer_skips_but_ci_fails(
    environ: dict[str, str], outcome: type[BaseException]
) -> None:
    with pytest.raises(outcome, match="no server here"):
        postgres.unavailable("no server here", environ=environ)


def test_a_run_in_ci_without_postgresql_binaries_fails(tmp_path: Path) -> None:
    """The whole path, in a real pytest: no server binaries anywhere and CI=true."""
    empty = tmp_path / "bin"
    empty.mkdir()
    environ = {"PATH": str(empty), "CI": "true", postgres.BINDIR_VARIABLE: str(empty)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_the_server_answers_a_query",
        ],
        capture_output=True,
        text=True,
        env=environ,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 1, result.stdout
    assert "CI must run the PostgreSQL tests" in result.stdout


def test_a_server_whose_test_run_is_killed_is_stopped_and_removed() -> None:
    """`timeout` and CI kill a hung run without pytest's finalizers: no server is left."""
    bindir = postgres.find_bindir(postgres.bindir_pattern(os.environ))
    if bindir is None:
        postgres.unavailable("no PostgreSQL server binaries", environ=os.environ)
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom tests import postgres\n"
        "with postgres.running_server(Path(sys.argv[1])) as url:\n"
        "    print(url, flush=True)\n    time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(bindir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    ) as run:
        assert run.stdout is not None
        url = run.stdout.readline().strip()
        psycopg.connect(url).close()
        run.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            psycopg.connect(url, connect_timeout=2).close()
        except psycopg.OperationalError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the server at {url} still answers 20 s after its test run was killed")
