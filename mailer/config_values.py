"""The kinds of value config.toml's keys take, each checked with a message that shows the
value and says what was expected: paths, database URLs, durations, addresses, zones,
one-line text."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError, core_schema

from mailer.languages import LANGUAGE_EXPECTED, is_language
from mailer.timing import parse_duration
from mailer.workdays import is_country

_ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]*")
_ONE_LINE_EXPECTED = "expected one line of printable text, got {}"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The value is not shown: what sits here by mistake is often the password itself.
_ENV_NAME_EXPECTED = (
    "expected the NAME of an environment variable, like MAILER_SMTP_PASSWORD "
    "(letters, digits and _), not the password"
)
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*", re.ASCII | re.IGNORECASE)
_DOMAIN_EXPECTED = "expected a domain name like example.org, got {}"
_ZONE_EXPECTED = 'expected an IANA time zone like "Europe/Stockholm", got {}'
# libpq's URI form (its other spelling, "host=db dbname=mailer", would read as a file name).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
URL_PASSWORD_REFUSED = (
    "a password in the URL is not allowed; give it in PGPASSWORD, PGPASSFILE or ~/.pgpass"
)


class PostgresUrl(str):
    """A PostgreSQL database named by libpq's URI (`postgresql://mailer@db/mailer?sslmode=
    verify-full`), handed to libpq as written, options and all; it never holds a password.

    A str, so the store's and libpq's functions take it as it is; its own type, so a
    `paths.database` that is a URL is never mistaken for a file name (or the reverse).
    """

    __slots__ = ()

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            _postgres_url, core_schema.str_schema(strict=True)
        )


def quote(value: object) -> str:
    """Show a value the way it looks in TOML: strings in double quotes, true/false."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Anchor a relative path at the config file's folder, so the service runs from anywhere."""
    base: Path = (info.context or {}).get("base", Path("."))
    return (base / value.expanduser()).absolute()


def url_has_password(url: str) -> bool:
    """Whether libpq would find a password in the URL: `user:secret@` or `?password=`."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    return parts.password is not None or any(key == "password" for key, _ in query)


def _postgres_url(value: str) -> PostgresUrl:
    """A PostgreSQL URL without a password. The message never shows the value: it may hold
    the password, and a configuration error is printed and logged."""
    scheme = _URL_SCHEME.match(value)
    if scheme is None or not value.startswith(POSTGRES_SCHEMES):
        kind = f"a {scheme.group(1)}:// URL" if scheme else quote(value)
        raise ValueError(f"expected a file path or a postgresql:// URL, got {kind}")
    if url_has_password(value):
        raise ValueError(URL_PASSWORD_REFUSED)
    return PostgresUrl(value)


def _database(value: object, info: ValidationInfo) -> Path | PostgresUrl:
    """`paths.database`: a URL as it is (libpq reads it), else a file path beside config.toml."""
    if isinstance(value, PostgresUrl):
        return value
    if isinstance(value, str) and _URL_SCHEME.match(value):
        return _postgres_url(value)
    if isinstance(value, str | Path):
        return _resolve(Path(value), info)
    raise PydanticCustomError("path_type", "expected a file path or a postgresql:// URL")


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
    raise ValueError(f"expected a PEM file of CA certificates, got {quote(str(path))}: {reason}")


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
        raise ValueError(f"expected an email address, got {quote(value)} ({exc})") from None
    return value


def checked(is_valid: Callable[[Any], object], message: str) -> AfterValidator:
    """A validator whose error is `message` with the bad value shown at its `{}`."""

    def check(value: Any) -> Any:
        if not is_valid(value):
            raise ValueError(message.format(quote(value)))
        return value

    return AfterValidator(check)


def _is_zone(name: str) -> bool:
    """Whether zoneinfo can load `name`: a typo must stop the start, not a send days later."""
    try:
        ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):  # OSError: "Europe" is a folder
        return False
    return True


def between(low: int, high: int) -> AfterValidator:
    """A range check whose message names both ends ("must be 1-65535, got 70000")."""
    return checked(lambda value: low <= value <= high, f"must be {low}-{high}, got {{}}")


ConfigPath = Annotated[Path, Field(strict=False), AfterValidator(_resolve)]  # TOML has no paths
Database = Annotated[Path | PostgresUrl, PlainValidator(_database)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Address = Annotated[str, AfterValidator(_address)]
OneLine = Annotated[str, checked(_ONE_LINE.fullmatch, _ONE_LINE_EXPECTED)]
EnvName = Annotated[str, checked(ENV_NAME.fullmatch, _ENV_NAME_EXPECTED)]
Domain = Annotated[str, checked(_DOMAIN.fullmatch, _DOMAIN_EXPECTED)]
Language = Annotated[str, checked(is_language, LANGUAGE_EXPECTED)]
Zone = Annotated[str, checked(_is_zone, _ZONE_EXPECTED)]
Country = Annotated[
    str,
    checked(is_country, 'expected a country code the holidays library knows, like "SE", got {}'),
]
CaFile = Annotated[ConfigPath, AfterValidator(_ca_file)]
