"""The kinds of value config.toml's keys take, each checked with a message that shows the
value and says what was expected: paths, durations, addresses, zones, one-line text."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo

from mailer.languages import LANGUAGE_EXPECTED, is_language
from mailer.timing import parse_duration

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


def quote(value: object) -> str:
    """Show a value the way it looks in TOML: strings in double quotes, true/false."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Anchor a relative path at the config file's folder, so the service runs from anywhere."""
    base: Path = (info.context or {}).get("base", Path("."))
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
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Address = Annotated[str, AfterValidator(_address)]
OneLine = Annotated[str, checked(_ONE_LINE.fullmatch, _ONE_LINE_EXPECTED)]
EnvName = Annotated[str, checked(ENV_NAME.fullmatch, _ENV_NAME_EXPECTED)]
Domain = Annotated[str, checked(_DOMAIN.fullmatch, _DOMAIN_EXPECTED)]
Language = Annotated[str, checked(is_language, LANGUAGE_EXPECTED)]
Zone = Annotated[str, checked(_is_zone, _ZONE_EXPECTED)]
CaFile = Annotated[ConfigPath, AfterValidator(_ca_file)]
