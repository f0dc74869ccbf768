"""The service configuration: find the TOML file, validate it into a frozen `Settings`."""

from __future__ import annotations

import json
import os
import re
import ssl
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

from mailer.errors import ConfigError, Problems
from mailer.timing import parse_duration, written_duration

DEFAULT_CONFIG_NAMES = ("config.toml", "config.example.toml")
_PASSWORD_IN_FILE = (
    "a password never sits in a file; put it in an environment variable "
    "and name that variable in transport.password_env"
)
_ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]*")
_ONE_LINE_EXPECTED = "expected one line of printable text, got {}"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The value is not shown: what sits here by mistake is often the password itself.
_ENV_NAME_EXPECTED = (
    "expected the NAME of an environment variable, like MAILER_SMTP_PASSWORD "
    "(letters, digits and _), not the password"
)
_LANGUAGE = re.compile(r"[a-z]{2,3}")  # the ISO 639 codes babel and the templates know
_LANGUAGE_EXPECTED = 'expected a language code like "sv" or "en", got {}'
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*", re.ASCII | re.IGNORECASE)
_DOMAIN_EXPECTED = "expected a domain name like example.org, got {}"
_ZONE_EXPECTED = 'expected an IANA time zone like "Europe/Stockholm", got {}'


def _quote(value: object) -> str:
    """Show a value the way it looks in TOML: strings in double quotes, true/false."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Anchor a relative path at the config file's folder, so the service runs from anywhere."""
    base = (info.context or {}).get("base", Path("."))
    return (base / value.expanduser()).absolute()


def _ca_file(path: Path) -> Path:
    """A CA file the TLS context can load, checked at start rather than at the first send."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "is a folder, not a file"
    except ssl.SSLError:  # an OSError too: asked first
        reason = "holds no PEM certificate"
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
    else:
        return path
    raise ValueError(f"expected a PEM file of CA certificates, got {_quote(str(path))}: {reason}")


def _duration(value: object) -> object:
    """Parse "90s"/"5m"/"2h"/"3d"/"1w" or seconds; a timedelta given in code passes through."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    return value


def _address(value: str) -> str:
    """Check address syntax only (no DNS, so it works offline); keep it as written."""
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"expected an email address, got {_quote(value)} ({exc})") from None
    return value


def _check(is_valid: Callable[[Any], object], message: str) -> AfterValidator:
    """A validator whose error is `message` with the bad value shown at its `{}`."""

    def check(value: Any) -> Any:
        if not is_valid(value):
            raise ValueError(message.format(_quote(value)))
        return value

    return AfterValidator(check)


def _is_zone(name: str) -> bool:
    """Whether zoneinfo can load `name`: a typo must stop the start, not a send days later."""
    try:
        ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):  # OSError: "Europe" is a folder
        return False
    return True


def _between(low: int, high: int) -> AfterValidator:
    """A range check whose message names both ends ("must be 1-65535, got 70000")."""
    return _check(lambda value: low <= value <= high, f"must be {low}-{high}, got {{}}")


ConfigPath = Annotated[Path, Field(strict=False), AfterValidator(_resolve)]  # TOML has no paths
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Address = Annotated[str, AfterValidator(_address)]


class _Section(BaseModel):
    # strict: TOML values are typed, so "no" is not quietly read as false, nor true as 1.
    # validate_default: defaults pass the same validators, so default paths get resolved too.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


class PathSettings(_Section):
    schedules: ConfigPath = Path("schedules")
    templates: ConfigPath = Path("templates")
    database: ConfigPath = Path("var/mailer.sqlite3")


class SenderSettings(_Section):
    from_: Address = Field(alias="from")
    # A display name goes into a header, where a line break would forge another header.
    from_name: Annotated[str, _check(_ONE_LINE.fullmatch, _ONE_LINE_EXPECTED)] | None = None
    reply_to: Address | None = None
    language: Annotated[str, _check(_LANGUAGE.fullmatch, _LANGUAGE_EXPECTED)] = "sv"
    timezone: Annotated[str, _check(_is_zone, _ZONE_EXPECTED)] = "Europe/Stockholm"
    # Empty only until _default_domain fills it from `from`; a bad `from` reports itself.
    message_id_domain: Annotated[str, _check(_DOMAIN.fullmatch, _DOMAIN_EXPECTED)] = Field(
        default="", validate_default=False
    )

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


class SmtpTransport(_Section):
    kind: Literal["smtp"]
    host: str = Field(min_length=1)
    port: Annotated[int, _between(1, 65535)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: Annotated[str, _check(_ENV_NAME.fullmatch, _ENV_NAME_EXPECTED)] | None = None
    timeout: Duration = timedelta(seconds=30)
    validate_certs: bool = True
    # A PEM file of the CA(s) to trust for this server INSTEAD of the system's store (as
    # ssl.create_default_context(cafile=...) does); SSL_CERT_FILE replaces the store for all.
    ca_file: Annotated[ConfigPath, AfterValidator(_ca_file)] | None = None
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
    def _login_has_password(self) -> SmtpTransport:
        """A login name without a password would log in with an empty one and fail at 3 am."""
        if self.username and not self.password_env:
            raise ValueError(
                "username is set but password_env is not: name the environment variable "
                "that holds the password"
            )
        return self


class MaildirTransport(_Section):
    kind: Literal["maildir"] = "maildir"
    path: ConfigPath = Path("var/maildir")


def _transport_kind(value: Any) -> Any:
    """The union tag; a [transport] without `kind` is a Maildir, which needs no server."""
    return value.get("kind", "maildir") if isinstance(value, dict) else getattr(value, "kind", None)


Transport = Annotated[
    Annotated[SmtpTransport, Tag("smtp")] | Annotated[MaildirTransport, Tag("maildir")],
    Discriminator(_transport_kind),
]


class SendingSettings(_Section):
    connections: Annotated[int, _between(1, 100)] = 4
    max_per_minute: int = Field(default=600, ge=0)  # 0 means no limit
    attempts: int = Field(default=10, ge=1)
    backoff_first: Duration = timedelta(minutes=1)
    backoff_max: Duration = timedelta(hours=1)
    give_up_after: Duration = timedelta(days=2)
    max_lateness: Duration = timedelta(days=1)
    shutdown_grace: Duration = timedelta(seconds=10)

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
    transport: Transport
    sending: SendingSettings

    @model_validator(mode="before")
    @classmethod
    def _absent_tables_are_empty(cls, data: Any) -> Any:
        """A table left out takes all its defaults, validated like one written out empty."""
        return {name: {} for name in cls.model_fields} | data if isinstance(data, dict) else data


_TABLES: dict[tuple[str, ...], type[BaseModel]] = {
    (): Settings,
    ("paths",): PathSettings,
    ("sender",): SenderSettings,
    ("transport", "smtp"): SmtpTransport,
    ("transport", "maildir"): MaildirTransport,
    ("sending",): SendingSettings,
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
    try:
        settings = Settings.model_validate(raw, context={"base": path.absolute().parent})
    except ValidationError as exc:
        problems += [_problem(error, source) for error in exc.errors(include_url=False)]
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
    if _transport_kind(transport) == "smtp" and isinstance(name, str) and _ENV_NAME.fullmatch(name):
        value = os.environ.pop(name, None)
        if value:
            transport["password"] = SecretStr(value)
        elif needs_password:
            message = f"environment variable {name} is {'not set' if value is None else 'empty'}"
            problems.append(ConfigError(message, source=source, key="transport.password_env"))
    return problems


def _problem(error: ErrorDetails, source: str) -> ConfigError:
    """One pydantic error as `config.toml: transport.port: must be 1-65535, got 70000`."""
    loc = [str(part) for part in error["loc"]]
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    table = tuple(loc[:-1])
    if loc[:1] == ["transport"] and len(loc) > 1 and loc[1] in ("smtp", "maildir"):
        del loc[1]  # the union tag is pydantic's, not a key the user wrote
    if kind == "union_tag_invalid":
        loc, value = [*loc, "kind"], value.get("kind")
    got = None if isinstance(value, dict) else value
    message = _message(kind, _quote(value), ctx, table) or error["msg"]
    return ConfigError(message, source=source, key=".".join(loc) or None, got=got)


def _message(kind: str, shown: str, ctx: dict[str, Any], table: tuple[str, ...]) -> str | None:
    """A readable message for the error types a config file runs into; None for the rest."""
    match kind:
        case "missing":
            return "required"
        case "extra_forbidden":
            known = ", ".join(
                f.alias or name for name, f in _TABLES[table].model_fields.items() if not f.exclude
            )
            return f"unknown {'section' if not table else 'key'} (known: {known})"
        case "int_parsing" | "int_type" | "int_from_float":
            return f"expected a whole number, got {shown}"
        case "bool_parsing" | "bool_type":
            return f"expected true or false, got {shown}"
        case "string_type" | "path_type":
            return f"expected a string, got {shown}"
        case "string_too_short":
            return "must not be empty"
        case "literal_error" | "union_tag_invalid":
            choices = re.findall(r"'([^']*)'", ctx.get("expected") or ctx["expected_tags"])
            return f"expected one of {', '.join(map(_quote, choices))}, got {shown}"
        case "greater_than_equal":
            return f"must be at least {ctx['ge']}, got {shown}"
        case "model_type" | "dict_type" | "union_tag_not_found" | "model_attributes_type":
            return f"expected a table, got {shown}"
        case "value_error":
            return str(ctx["error"])
    return None
