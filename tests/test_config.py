"""config.py: real TOML files in tmp_path, and the exact one-line messages a person sees."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import trustme
from click.testing import CliRunner
from pydantic import BaseModel, ValidationError

from mailer.cli import main
from mailer.config import (
    DEFAULT_CONFIG_NAMES,
    PathSettings,
    SenderSettings,
    SendingSettings,
    find_config,
    load_settings,
)
from mailer.config_transport import MaildirSettings, SmtpSettings
from mailer.config_values import PostgresUrl
from mailer.errors import ConfigError, Problems
from mailer.store import Store
from tests.project import make_project, smtp_transport, write_event

EXAMPLE = Path(__file__).parents[1] / "config.example.toml"
SENDER = '[sender]\nfrom = "info@example.org"\n'
SMTP = SENDER + '[transport]\nkind = "smtp"\nhost = "smtp.example.org"\n'
SECRET = "correct horse battery staple"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(Problems) as caught:
        load_settings(path)
    assert all(isinstance(p, ConfigError) for p in caught.value.problems)
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (SMTP + "port = 70000\n", "transport.port: must be 1-65535, got 70000"),
        (SMTP + 'port = "587"\n', 'transport.port: expected a whole number, got "587"'),
        (
            SMTP + 'security = "ssl"\n',
            'transport.security: expected one of "starttls", "tls", "none", got "ssl"',
        ),
        (
            SENDER + '[bounces]\naddress = "bounces+x@example.org"\n',
            'bounces.address: expected a plain ASCII address without "+" (such as '
            "\"bounces@example.org\"), got 'bounces+x@example.org': mailer adds +<token> to it "
            "for each delivery",
        ),
        (SENDER + '[bounces]\npath = "x"\n', "bounces.address: required"),
        (
            SENDER + '[bounces]\naddress = "b@example.org"\nkind = "imap"\nhost = "h"\n',
            'bounces: kind = "imap" needs host, username and password_env (the name of the '
            "environment variable holding the password)",
        ),
        (
            SENDER + '[bounces]\naddress = "b@example.org"\npassword = "hunter2"\n',
            "bounces.password: a password never sits in a file; name its environment variable "
            "in bounces.password_env",
        ),
        (
            SENDER + '[retention]\nkeep = "soon"\n',
            'retention.keep: expected a duration like "90s", "5m", "2h", "3d" or a number of '
            'seconds, got "soon"',
        ),
        (
            SENDER + '[transport]\nkind = "pigeon"\n',
            'transport.kind: expected one of "smtp", "maildir", got "pigeon"',
        ),
        (
            SMTP + 'hots = "x"\n',
            "transport.hots: unknown key (known: kind, host, port, security, username, "
            "password_env, timeout, validate_certs, ca_file)",
        ),
        (
            SENDER + "[transport]\nhost = 1\n",
            "transport.host: unknown key (known: kind, path)",
        ),
        (
            SENDER + "[sendng]\n",
            "sendng: unknown section (known: paths, sender, transport, sending, web, retention, "
            "bounces)",
        ),
        ("[sender]\n", "sender.from: required"),
        (
            SMTP + 'password_env = "hunter2!"\n',
            "transport.password_env: expected the NAME of an environment variable, like "
            "MAILER_SMTP_PASSWORD (letters, digits and _), not the password",
        ),
        (SENDER + '[transport]\nkind = "smtp"\n', "transport.host: required"),
        (
            SMTP + 'password = "hunter2"\n',
            "transport.password: a password never sits in a file; put it in an environment "
            "variable and name that variable in transport.password_env",
        ),
        (
            SENDER + '[sending]\nbackoff_first = "soon"\n',
            'sending.backoff_first: expected a duration like "90s", "5m", "2h", "3d" '
            'or a number of seconds, got "soon"',
        ),
        (
            SMTP + 'timeout = "-5s"\n',
            'transport.timeout: expected a duration like "90s", '
            '"5m", "2h", "3d" or a number of seconds, got "-5s"',
        ),
        (
            SENDER + '[sending]\nbackoff_first = "2h"\n',
            "sending: backoff_first (2h) must not be longer than backoff_max (1h)",
        ),
        (SENDER + "[sending]\nattempts = 0\n", "sending.attempts: must be at least 1, got 0"),
        (SENDER + "[sending]\nconnections = 101\n", "sending.connections: must be 1-100, got 101"),
        (
            SENDER + 'timezone = "Europe/Stokholm"\n',
            'sender.timezone: expected an IANA time zone like "Europe/Stockholm", '
            'got "Europe/Stokholm"',
        ),
        (
            SENDER + 'language = "svenska"\n',
            'sender.language: expected a language code like "sv", "en" or "sv-FI", got "svenska"',
        ),
        (
            '[sender]\nfrom = "Info <info@example.org>"\n',
            'sender.from: expected an email address, got "Info <info@example.org>" '
            "(A display name and angle brackets around the email address are not permitted here.)",
        ),
        (
            SENDER + 'reply_to = "nobody"\n',
            'sender.reply_to: expected an email address, got "nobody" '
            "(An email address must have an @-sign.)",
        ),
        (
            SENDER + 'from_name = "Info\\nBcc: x@example.org"\n',
            "sender.from_name: expected one line of printable text, "
            'got "Info\\nBcc: x@example.org"',
        ),
        (
            SENDER + 'holidays = "Sverige"\n',
            'sender.holidays: expected a country code the holidays library knows, like "SE", '
            'got "Sverige"',
        ),
        (
            SENDER + "[transport]\nvalidate_certs = 1\n",
            "transport.validate_certs: unknown key (known: kind, path)",
        ),
        (
            SMTP + 'validate_certs = "no"\n',
            'transport.validate_certs: expected true or false, got "no"',
        ),
        (SENDER + "[paths]\ndatabase = 5\n", "paths.database: expected a string, got 5"),
        ("transport = 5\n" + SENDER, "transport: expected a table, got 5"),
        (SMTP + "port = 587.0\n", "transport.port: expected a whole number, got 587.0"),
        (SMTP + "port = true\n", "transport.port: expected a whole number, got true"),
    ],
)
def test_each_problem_reads_as_one_line_with_file_and_key(
    tmp_path: Path, text: str, line: str
) -> None:
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}: {line}"]


def test_every_problem_is_listed_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        SMTP + 'port = 70000\nsecurity = "ssl"\n[sending]\nconnections = 4\nretries = 3\n',
    )
    assert problems_of(path) == [
        f"{path}: transport.port: must be 1-65535, got 70000",
        f'{path}: transport.security: expected one of "starttls", "tls", "none", got "ssl"',
        f"{path}: sending.retries: unknown key (known: connections, max_per_minute, attempts, "
        "backoff_first, backoff_max, give_up_after, max_lateness, shutdown_grace, change_settle, "
        "lease)",
    ]


def test_problems_carry_key_and_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, SMTP + "port = 70000\n")
    with pytest.raises(Problems) as caught:
        load_settings(path)
    (problem,) = caught.value.problems
    assert (problem.source, problem.key, problem.got) == (str(path), "transport.port", 70000)


def test_password_is_read_from_the_named_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)
    path = write(tmp_path, SMTP + 'username = "info"\npassword_env = "MAILER_SMTP_PASSWORD"\n')
    transport = load_settings(path).transport
    assert isinstance(transport, SmtpSettings)
    assert transport.password is not None
    assert transport.password.get_secret_value() == SECRET
    assert (transport.username, transport.password_env) == ("info", "MAILER_SMTP_PASSWORD")


def test_the_password_leaves_the_environment_once_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes started later (reader workers, the resource tracker) inherit the environment."""
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)
    path = write(tmp_path, SMTP + 'password_env = "MAILER_SMTP_PASSWORD"\n')
    transport = load_settings(path).transport
    assert "MAILER_SMTP_PASSWORD" not in os.environ
    assert isinstance(transport, SmtpSettings) and transport.password is not None
    assert transport.password.get_secret_value() == SECRET


def test_password_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)
    path = write(tmp_path, SMTP + 'password_env = "MAILER_SMTP_PASSWORD"\n')
    settings = load_settings(path)
    for shown in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.transport),
    ):
        assert SECRET not in shown
    bad = write(tmp_path, SMTP + 'password_env = "MAILER_SMTP_PASSWORD"\nport = 0\nx = 1\n')
    with pytest.raises(Problems) as caught:
        load_settings(bad)
    assert SECRET not in str(caught.value)
    assert all(SECRET not in repr(p.got) for p in caught.value.problems)


def test_unset_password_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILER_SMTP_PASSWORD", raising=False)
    path = write(tmp_path, SMTP + 'password_env = "MAILER_SMTP_PASSWORD"\n')
    assert problems_of(path) == [
        f"{path}: transport.password_env: environment variable MAILER_SMTP_PASSWORD is not set"
    ]


def test_empty_password_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "")
    path = write(tmp_path, SMTP + 'password_env = "MAILER_SMTP_PASSWORD"\n')
    assert problems_of(path) == [
        f"{path}: transport.password_env: environment variable MAILER_SMTP_PASSWORD is empty"
    ]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert problems_of(missing) == [f"{missing}: cannot read: No such file or directory"]
    broken = write(tmp_path, SENDER + "[transport\n")
    assert problems_of(broken) == [
        f"{broken}: not valid TOML: Expected ']' at the end of a table declaration "
        "(at line 3, column 11)"
    ]


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, SENDER))
    assert settings.sender.from_ == "info@example.org"
    assert (settings.sender.language, settings.sender.zone) == ("sv", ZoneInfo("Europe/Stockholm"))
    assert settings.sender.message_id_domain == "example.org"
    assert settings.sender.reply_to is None
    assert settings.transport == MaildirSettings(kind="maildir", path=tmp_path / "var/maildir")
    sending = settings.sending
    assert (sending.connections, sending.max_per_minute, sending.attempts) == (4, 600, 10)
    assert (sending.backoff_first, sending.backoff_max) == (
        timedelta(minutes=1),
        timedelta(hours=1),
    )
    assert (sending.give_up_after, sending.max_lateness) == (timedelta(days=2), timedelta(days=1))
    assert sending.shutdown_grace == timedelta(seconds=10)
    smtp = load_settings(write(tmp_path, SMTP)).transport
    assert isinstance(smtp, SmtpSettings)
    assert (smtp.port, smtp.security, smtp.timeout) == (587, "starttls", timedelta(seconds=30))
    assert (smtp.validate_certs, smtp.username, smtp.password) == (True, None, None)


def test_values_as_written(tmp_path: Path) -> None:
    text = (
        '[sender]\nfrom = "Info@Example.ORG"\nreply_to = "svar@example.org"\nlanguage = "en"\n'
        'timezone = "America/New_York"\nmessage_id_domain = "mail.example.org"\n'
        '[sending]\nbackoff_first = 30\nmax_lateness = "2w"\nmax_per_minute = 0\n'
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.sender.from_ == "Info@Example.ORG"
    assert settings.sender.reply_to == "svar@example.org"
    assert settings.sender.zone == ZoneInfo("America/New_York")
    assert settings.sender.message_id_domain == "mail.example.org"
    assert settings.sending.backoff_first == timedelta(seconds=30)
    assert settings.sending.max_lateness == timedelta(weeks=2)
    assert settings.sending.max_per_minute == 0


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    text = SENDER + f'[paths]\nschedules = "events"\ntemplates = "{tmp_path / "tpl"}"\n'
    path = write(folder, text + '[transport]\npath = "../mail"\n')
    settings = load_settings(path)
    assert settings.paths.schedules == folder / "events"
    assert settings.paths.templates == tmp_path / "tpl"
    assert settings.paths.database == folder / "var" / "mailer.sqlite3"
    assert isinstance(settings.transport, MaildirSettings)
    assert settings.transport.path == folder / ".." / "mail"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, SENDER))
    with pytest.raises(ValidationError):
        settings.sending.attempts = 1  # type: ignore[misc]


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    with pytest.raises(ConfigError) as caught:
        find_config(None, cwd=tmp_path)
    assert str(caught.value) == (
        f"no configuration file (tried {tmp_path / 'config.toml'}, "
        f"{tmp_path / 'config.example.toml'}); pass -c PATH or set MAILER_CONFIG"
    )
    example, local = (write(tmp_path, "", name) for name in reversed(DEFAULT_CONFIG_NAMES))
    assert find_config(None, cwd=tmp_path) == local
    local.unlink()
    assert find_config(None, cwd=tmp_path) == example
    monkeypatch.setenv("MAILER_CONFIG", "from-env.toml")
    assert find_config(None, cwd=tmp_path) == tmp_path / "from-env.toml"
    assert find_config(Path("/etc/mailer.toml"), cwd=tmp_path) == Path("/etc/mailer.toml")


def test_shipped_example_loads_and_needs_no_server() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.transport == MaildirSettings(path=EXAMPLE.parent / "var" / "maildir")
    assert settings.paths == PathSettings.model_validate({}, context={"base": EXAMPLE.parent})
    assert settings.sender.from_ == "samhallskontraktet@example.org"
    assert settings.sender.from_name == "Samhällskontraktet"
    assert (settings.sender.language, settings.sender.timezone) == ("sv", "Europe/Stockholm")
    assert settings.sending == SendingSettings()


def test_shipped_example_shows_every_key_with_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    commented = set()
    for above, line in itertools.pairwise(lines):
        match = re.fullmatch(r"(# )?(\w+) = .+", line)
        if match and re.fullmatch(r"#( #)? \S.*", above):
            commented.add(match[2])
    models: list[type[BaseModel]] = [
        PathSettings,
        SenderSettings,
        SmtpSettings,
        MaildirSettings,
        SendingSettings,
    ]
    keys = {f.alias or name for m in models for name, f in m.model_fields.items() if not f.exclude}
    assert keys - commented == set()


@pytest.mark.parametrize(("security", "port"), [("tls", 465), ("starttls", 587), ("none", 25)])
def test_the_default_port_goes_with_security(tmp_path: Path, security: str, port: int):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sender]\nfrom = "a@example.org"\n[transport]\nkind = "smtp"\n'
        f'host = "relay.example.org"\nsecurity = "{security}"\n'
    )
    assert load_settings(config).transport.port == port


def test_a_username_without_password_env_is_refused(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[sender]\nfrom = "a@example.org"\n[transport]\nkind = "smtp"\n'
        'host = "relay.example.org"\nusername = "mailer"\n'
    )
    with pytest.raises(Problems) as caught:
        load_settings(config)
    assert str(caught.value) == (
        f"{config}: transport: username is set but password_env is "
        "not: name the environment variable that holds the password"
    )


def test_ca_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    (folder / "tls").mkdir(parents=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "tls" / "ca.pem"))
    transport = load_settings(write(folder, SMTP + 'ca_file = "tls/ca.pem"\n')).transport
    assert isinstance(transport, SmtpSettings)
    assert transport.ca_file == folder / "tls" / "ca.pem"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("missing.pem", "no such file"),
        (".", "is a folder, not a file"),
        ("config.toml", "holds no PEM certificate"),
    ],
)
def test_a_ca_file_that_cannot_be_used_is_refused(
    tmp_path: Path, written: str, reason: str
) -> None:
    path = write(tmp_path, SMTP + f'ca_file = "{written}"\n')
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: transport.ca_file: ")
    assert reason in line
    assert str(tmp_path / written) in line


def write_smtp_project(root: Path) -> Path:
    """A project sending through SMTP with a login, one event and a database (as `run` leaves
    it), ready for every command."""
    config = make_project(root, transport=smtp_transport(2525))
    write_event(root, "forlabb")

    async def create_database() -> None:
        await (await Store.open(root / "var" / "mailer.sqlite3")).close()

    asyncio.run(create_database())
    return config


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["check"], 0),
        (["status"], 0),
        (["preview", "forlabb", "invitation", "--out", "{root}/preview"], 0),
        (["rehearse", "{root}/schedules/forlabb.toml", "--out", "{root}/rehearsal"], 0),
        (["retry", "forlabb"], 0),
        (["run"], 2),
        (["send", "forlabb", "invitation"], 2),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_only_the_commands_that_send_need_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], code: int
) -> None:
    """An organiser runs `check` on the server, an operator `status` in a shell without the
    unit's EnvironmentFile: neither sends, so neither needs the SMTP password."""
    monkeypatch.delenv("MAILER_SMTP_PASSWORD", raising=False)
    config = write_smtp_project(tmp_path)
    args = [arg.format(root=tmp_path) for arg in command]
    exit_code, output = run_cli(*args, "-c", str(config))
    assert exit_code == code, output
    unset = "transport.password_env: environment variable MAILER_SMTP_PASSWORD is not set"
    assert (unset in output) == (code == 2)


def test_a_command_that_does_not_send_still_takes_the_password_out_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET)
    path = write(tmp_path, SMTP + 'password_env = "MAILER_SMTP_PASSWORD"\n')
    transport = load_settings(path, needs_password=False).transport
    assert "MAILER_SMTP_PASSWORD" not in os.environ
    assert isinstance(transport, SmtpSettings) and transport.password is not None
    monkeypatch.delenv("MAILER_SMTP_PASSWORD", raising=False)
    transport = load_settings(path, needs_password=False).transport
    assert isinstance(transport, SmtpSettings) and transport.password is None


DB_SECRET = "s3cret-Pw"
URL_PASSWORD_REFUSED = (
    "paths.database: a password in the URL is not allowed; "
    "give it in PGPASSWORD, PGPASSFILE or ~/.pgpass"
)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mailer@db.example.org:5432/mailer?sslmode=verify-full",
        "postgres://mailer@db/mailer",
        "postgresql://mailer@db1:5432,db2:5433/mailer?target_session_attrs=read-write",
        "postgresql:///mailer?host=/var/run/postgresql&application_name=mailer",
    ],
)
def test_a_postgresql_url_is_the_database_as_written(tmp_path: Path, url: str) -> None:
    """libpq reads the URL, options and all (sslmode, several hosts, a socket folder): mailer
    passes it on unchanged instead of taking it for a file path beside config.toml."""
    settings = load_settings(write(tmp_path, SENDER + f'[paths]\ndatabase = "{url}"\n'))
    assert isinstance(settings.paths.database, PostgresUrl)
    assert settings.paths.database == PostgresUrl(url)
    assert str(settings.paths.database) == url


def test_a_database_file_is_still_a_path_beside_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, SENDER + '[paths]\ndatabase = "state/m.db"\n'))
    assert settings.paths.database == tmp_path / "state" / "m.db"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://mailer:{DB_SECRET}@db/mailer",
        f"postgres://mailer:{DB_SECRET}@db.example.org:5432/mailer?sslmode=require",
        f"postgresql://mailer@db/mailer?sslmode=require&password={DB_SECRET}",
        "postgresql://mailer:s3cret%2DPw@db/mailer",
    ],
)
def test_a_password_in_the_database_url_is_refused_without_showing_it(
    tmp_path: Path, url: str
) -> None:
    """The file is read by anyone who may read the configuration, and the URL ends up in
    logs and `ps`: libpq's PGPASSWORD, PGPASSFILE and ~/.pgpass are where it goes."""
    path = write(tmp_path, SENDER + f'[paths]\ndatabase = "{url}"\n')
    with pytest.raises(Problems) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: {URL_PASSWORD_REFUSED}"
    seen = [caught.value, caught.value.__cause__, caught.value.__context__, *caught.value.problems]
    assert not any("s3cret" in repr(part) for part in seen)
    assert all("s3cret" not in repr(problem.got) for problem in caught.value.problems)
    exit_code, output = run_cli("check", "-c", str(path))
    assert exit_code == 2
    assert URL_PASSWORD_REFUSED in output and "s3cret" not in output


def test_a_database_url_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, SENDER + '[paths]\ndatabase = "mysql://mailer@db/mailer"\n')
    assert problems_of(path) == [
        f"{path}: paths.database: expected a file path or a postgresql:// URL, got a mysql:// URL"
    ]


def test_status_with_a_postgresql_url_asks_that_server(tmp_path: Path, fresh_database: str) -> None:
    """The URL reaches the PostgreSQL store (an empty database: not set up yet), not a file."""
    path = write(tmp_path, SENDER + f'[paths]\ndatabase = "{fresh_database}"\n')
    exit_code, output = run_cli("status", "-c", str(path))
    assert exit_code == 2
    assert f"paths.database: no database at {fresh_database}:" in output
    assert list(tmp_path.iterdir()) == [path]


def test_retention_keeps_180_days_by_default_and_everything_with_an_empty_keep(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(SENDER, encoding="utf-8")
    settings = load_settings(config)
    assert settings.retention.keep == timedelta(days=180) and settings.bounces is None
    config.write_text(SENDER + '[retention]\nkeep = ""\n', encoding="utf-8")
    assert load_settings(config).retention.keep is None
