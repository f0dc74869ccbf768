"""The service configuration: find the TOML file, validate it into a frozen `Settings`.

What each key's value may be: config_values.py; pydantic's errors in the file's words:
config_problems.py. The tables of their own: config_transport.py, config_web.py,
config_privacy.py.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from mailer.config_privacy import BouncesSettings, RetentionSettings, bounces_problems
from mailer.config_problems import config_problem
from mailer.config_transport import (
    MaildirSettings,
    SmtpSettings,
    TransportSettings,
    transport_problems,
)
from mailer.config_values import (
    URL_PASSWORD_REFUSED,
    Address,
    ConfigPath,
    Country,
    Database,
    Domain,
    Duration,
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
    # Whose public holidays `workdays` skips and `check` warns of (SPEC §14). The default
    # is one the library knows: checking it would import the library for every command.
    holidays: Country = Field(default="SE", validate_default=False)
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


class SendingSettings(_Section):
    connections: Annotated[int, between(1, 100)] = 4
    max_per_minute: int = Field(default=600, ge=0)  # 0 means no limit
    attempts: int = Field(default=10, ge=1)
    backoff_first: Duration = timedelta(minutes=1)
    backoff_max: Duration = timedelta(hours=1)
    give_up_after: Duration = timedelta(days=2)
    max_lateness: Duration = timedelta(days=1)
    shutdown_grace: Duration = timedelta(seconds=10)
    # SPEC §10: an organiser saves several times; their changes become one notice.
    change_settle: Duration = timedelta(minutes=10)
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
    problems = transport_problems(raw, source, needs_password=needs_password)
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
