"""`[transport]`: the SMTP server to send through, or a Maildir to write into instead, and the
SMTP password taken from the environment. Beside config.py, which would pass 300 lines."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, model_validator

from mailer.config_values import ENV_NAME, CaFile, ConfigPath, Duration, EnvName, between
from mailer.errors import ConfigError

_PASSWORD_IN_FILE = (
    "a password never sits in a file; put it in an environment variable "
    "and name that variable in transport.password_env"
)


class _Table(BaseModel):
    # As config._Section (not imported from there: config.py imports this module).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_default=True, hide_input_in_errors=True
    )


class SmtpSettings(_Table):
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


class MaildirSettings(_Table):
    kind: Literal["maildir"] = "maildir"
    path: ConfigPath = Path("var/maildir")


def transport_kind(value: Any) -> Any:
    """The union tag; a [transport] without `kind` is a Maildir, which needs no server."""
    return value.get("kind", "maildir") if isinstance(value, dict) else getattr(value, "kind", None)


TransportSettings = Annotated[
    Annotated[SmtpSettings, Tag("smtp")] | Annotated[MaildirSettings, Tag("maildir")],
    Discriminator(transport_kind),
]


def transport_problems(
    raw: dict[str, Any], source: str, *, needs_password: bool
) -> list[ConfigError]:
    """Refuse a literal password; move the one $password_env names into the transport.

    Only the configuration modules read the environment, so everything else gets secrets as
    values. The
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
    if transport_kind(transport) == "smtp" and isinstance(name, str) and ENV_NAME.fullmatch(name):
        value = os.environ.pop(name, None)
        if value:
            transport["password"] = SecretStr(value)
        elif needs_password:
            message = f"environment variable {name} is {'not set' if value is None else 'empty'}"
            problems.append(ConfigError(message, source=source, key="transport.password_env"))
    return problems
