"""The service configuration: find the TOML file, validate it into a frozen `Settings`.

What each key's value may be: config_values.py; pydantic's errors in the file's words:
config_problems.py.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    model_validator,
)

from mailer.config_privacy import BouncesSettings, RetentionSettings, bounces_problems
from mailer.config_problems import config_problem
from mailer.config_values import (
    ENV_NAME,
    URL_PASSWORD_REFUSED,
    Address,
    CaFile,
    ConfigPath,
    Country,
    Database,
    Domain,
    Duration,
    EnvName,
    Language,
    OneLine,
    Zone,
    between,
    checked,
    url_has_password,
)
from mailer.config_web import WebSettings, web_problems
from mailer.errors import ConfigError, Problems
from mailer.timing import written_duration

DEFAULT_CONFIG_NAMES = ("config.toml", "config.example.toml")
_PASSWORD_IN_FILE = (
    "a password never sits in a file; put it in an environment variable "
    "and name that variable in transport.password_env"
)


class _Section(BaseModel):
    # strict: TOML values are typed, so "no" is not quietly read as false, nor true as 1.
    # validate_default: defaults pass the same validators, so default paths get resolved too.
    # hide_input_in_errors: a traceback never shows a value that may be a password (a
    # database URL with one in it); config_problems.py words what a person sees.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_default=True, hide_input_in_errors=True
    )


class PathSettings(_Section):
    schedules: ConfigPath = Path("schedules")
    templates: ConfigPath = Path("templates")
    # A SQLite file, or a postgresql:// URL for several nodes on one database (SPEC §9).
    database: Database = Path("var/mailer.sqlite3")


class SenderSettings(_Section):
    from_: Address = Field(alias="from")
    # A display name goes into a header, where a line break would forge another header.
    from_name: OneLine | None = None
    reply_to: Address | None = None
    language: Language = "sv"
    timezone: Zone = "Europe/Stockholm"
    # Whose public holidays `workdays` skips and `check` warns of (SPEC §14).
    holidays: Country = "SE"
    # Empty only until _default_domain fills it from `from`; a bad `from` reports itself.
    message_id_domain: Domain = Field(default="", validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _default_domain(cls, data: Any) -> Any:
        """Message-IDs default to the sender's domain, the one domain we know is ours."""
        if isinstance(data, dict) and isinstance(data.get("from"), str):
            try:
                found = validate_email(data["from"], check_deliverability=False)
            except EmailNotValidError:
                return data  # `from` reports its own problem
            return {"message_id_domain": found.ascii_domain.lower()} | data
        return data

    @property
    def zone(self) -> ZoneInfo:
        """The default time zone of events that name none."""
        return ZoneInfo(self.timezone)


class SmtpSettings(_Section):
    kind: Literal["smtp"]
    host: str = Field(min_length=1)
    port: Annotated[int, between(1, 65535)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName | None = None
    timeout: Duration = timedelta(seconds=30)
    validate_certs: bool = True
    # A PEM file of the CA(s) to trust for this server INSTEAD of the system's store (as
    # ssl.create_default_context(cafile=...) does); SSL_CERT_FILE replaces the store for all.
    ca_file: CaFile | None = None
    # From $password_env via load_settings, never from the file; SecretStr keeps it out of repr.
    password: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        """The port that goes with `security`: 465 for TLS from the start, 587 to submit
        with STARTTLS, 25 for a plain local relay."""
        if isinstance(data, dict) and "port" not in data:
            port = {"tls": 465, "none": 25}.get(data.get("security", "starttls"), 587)
            return {**data, "port": port}
        return data

    @model_validator(mode="after")
    def _login_has_password(self) -> SmtpSettings:
        """A login name without a password would log in with an empty one and fail at 3 am."""
        if self.username and not self.password_env:
            raise ValueError(
                "username is set but password_env is not: name the environment variable "
                "that holds the password"
            )
        return self


class MaildirSettings(_Section):
    kind: Literal["maildir"] = "maildir"
    path: ConfigPath = Path("var/maildir")


def _transport_kind(value: Any) -> Any:
    """The union tag; a [transport] without `kind` is a Maildir, which needs no server."""
    return value.get("kind", "maildir") if isinstance(value, dict) else getattr(value, "kind", None)


TransportSettings = Annotated[
    Annotated[SmtpSettings, Tag("smtp")] | Annotated[MaildirSettings, Tag("maildir")],
    Discriminator(_transport_kind),
]


class SendingSettings(_Section):
    connections: Annotated[int, between(1, 100)] = 4
    max_per_minute: int = Field(default=600, ge=0)  # 0 means no limit
    attempts: int = Field(default=10, ge=1)
    backoff_first: Duration = timedelta(minutes=1)
    backoff_max: Duration = timedelta(hours=1)
    give_up_after: Duration = timedelta(days=2)
    max_lateness: Duration = timedelta(days=1)
    shutdown_grace: Duration = timedelta(seconds=10)
    # How long a claim of a node that stopped renewing it (killed, frozen, cut off) holds
    # before another node sends it (SPEC §9: 30 s). Shorter: a frozen node's mail goes out
    # sooner, and a node paused longer than this (a slow disk, a long GC) may see a message
    # it had in hand sent by another too.
    lease: Annotated[
        Duration,
        checked(
            lambda d: timedelta(seconds=3) <= d <= timedelta(minutes=10),
            "must be between 3s and 10m (the default, 30s, suits nearly everyone)",
        ),
    ] = timedelta(seconds=30)

    @model_validator(mode="after")
    def _backoff_grows(self) -> SendingSettings:
        """Retry waits grow from backoff_first to backoff_max; a cap below the start is a typo."""
        if self.backoff_first > self.backoff_max:
            raise ValueError(
                f"backoff_first ({written_duration(self.backoff_first)}) must not be longer "
                f"than backoff_max ({written_duration(self.backoff_max)})"
            )
        return self


class Settings(_Section):
    """Everything the service needs to start; built only by `load_settings`."""

    paths: PathSettings
    sender: SenderSettings
    transport: TransportSettings
    sending: SendingSettings
    web: WebSettings
    retention: RetentionSettings
    bounces: BouncesSettings | None = None  # none: no bounce handling (SPEC §11)

    @model_validator(mode="before")
    @classmethod
    def _absent_tables_are_empty(cls, data: Any) -> Any:
        """A table left out takes all its defaults, validated like one written out empty
        (all but [bounces], whose absence means no bounce handling)."""
        if not isinstance(data, dict):
            return data
        return {name: {} for name in cls.model_fields if name != "bounces"} | data


_TABLES: dict[tuple[str, ...], type[BaseModel]] = {
    (): Settings,
    ("paths",): PathSettings,
    ("sender",): SenderSettings,
    ("transport", "smtp"): SmtpSettings,
    ("transport", "maildir"): MaildirSettings,
    ("sending",): SendingSettings,
    ("web",): WebSettings,
    ("retention",): RetentionSettings,
    ("bounces",): BouncesSettings,
}


def find_config(explicit: Path | None, *, cwd: Path) -> Path:
    """-c PATH, else $MAILER_CONFIG, else config.toml, else config.example.toml in `cwd`.

    A path the user named is returned even when missing: load_settings then says so,
    rather than silently falling back to another file.
    """
    named = explicit or os.environ.get("MAILER_CONFIG")
    if named:
        return cwd / named
    tried = [cwd / name for name in DEFAULT_CONFIG_NAMES]
    for path in tried:
        if path.is_file():
            return path
    raise ConfigError(
        f"no configuration file (tried {', '.join(map(str, tried))}); "
        "pass -c PATH or set MAILER_CONFIG"
    )


def load_settings(path: Path, *, needs_password: bool = True) -> Settings:
    """Read and validate `path`; raise `Problems` listing every problem, each with file and key.

    `needs_password=False` for commands that send nothing (check, status, preview, ...): an
    unset $password_env is then no problem, and the transport's password is None.
    """
    source = str(path)
    raw = _read_toml(path)
    problems = _take_password(raw, source, needs_password=needs_password)
    problems += web_problems(raw, source, needs_password=needs_password)
    problems += bounces_problems(raw, source, needs_password=needs_password)
    problems += _drop_url_password(raw, source)
    try:
        settings = Settings.model_validate(raw, context={"base": path.absolute().parent})
    except ValidationError as exc:
        problems += [
            config_problem(error, source, tables=_TABLES) for error in exc.errors(include_url=False)
        ]
        raise Problems(problems) from exc
    if problems:
        raise Problems(problems)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's tables, or one ConfigError saying why they cannot be had."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
    except UnicodeDecodeError:
        reason = "cannot read: not UTF-8 text"
    except tomllib.TOMLDecodeError as exc:  # its message carries the line and column
        reason = f"not valid TOML: {exc}"
    raise Problems([ConfigError(reason, source=path)])


def _drop_url_password(raw: dict[str, Any], source: str) -> list[ConfigError]:
    """Refuse a database URL that holds a password, and drop it before pydantic sees it:
    its errors and the exceptions they chain would carry the URL, password and all."""
    paths = raw.get("paths")
    if not isinstance(paths, dict):
        return []
    database = paths.get("database")
    if not (isinstance(database, str) and url_has_password(database)):
        return []
    del paths["database"]
    return [ConfigError(URL_PASSWORD_REFUSED, source=source, key="paths.database")]


def _take_password(raw: dict[str, Any], source: str, *, needs_password: bool) -> list[ConfigError]:
    """Refuse a literal password; move the one $password_env names into the transport.

    Only this module reads the environment, so everything else gets secrets as values. The
    variable is taken out of the environment as it is read: every process started later
    (reader workers, multiprocessing's resource tracker) inherits the environment, and
    anyone who may run `ps eww` could read it there. (The kernel keeps the service's own
    environment as it was at exec, in /proc/<pid>/environ, readable by root and its user.)
    A second load in the same process therefore needs the variable set again.
    """
    transport = raw.get("transport")
    if not isinstance(transport, dict):
        return []
    problems = []
    if transport.pop("password", None) is not None:
        problems.append(ConfigError(_PASSWORD_IN_FILE, source=source, key="transport.password"))
    name = transport.get("password_env")
    if _transport_kind(transport) == "smtp" and isinstance(name, str) and ENV_NAME.fullmatch(name):
        value = os.environ.pop(name, None)
        if value:
            transport["password"] = SecretStr(value)
        elif needs_password:
            message = f"environment variable {name} is {'not set' if value is None else 'empty'}"
            problems.append(ConfigError(message, source=source, key="transport.password_env"))
    return problems
