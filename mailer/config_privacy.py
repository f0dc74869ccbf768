"""`[bounces]` (SPEC §11) and `[retention]` (SPEC §13): where bounces are read from, and how
long participants' personal data is kept. Beside config.py, which would pass 300 lines."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from mailer.config_values import ENV_NAME, Address, CaFile, ConfigPath, EnvName, between
from mailer.errors import ConfigError
from mailer.timing import parse_duration

# SPEC §13's default: half a year after an event's end is long enough for questions,
# certificates and a follow-up, and short enough for storage limitation (GDPR art. 5).
DEFAULT_KEEP = timedelta(days=180)


def _keep(value: object) -> object:
    """ "180d" and the other durations; "" keeps everything (None)."""
    if value == "":
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    return value


class _Table(BaseModel):
    # As config._Section (not imported from there: config.py imports this module).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_default=True, hide_input_in_errors=True
    )


class BouncesSettings(_Table):
    """The bounce address and the mailbox its mail is delivered to: a Maildir (`path`) or an
    IMAP folder over TLS (`host` ... `folder`)."""

    address: Address
    kind: Literal["maildir", "imap"] = "maildir"
    path: ConfigPath = Path("var/bounces")
    host: str | None = Field(default=None, min_length=1)
    port: Annotated[int, between(1, 65535)] = 993  # IMAP over TLS from the first byte
    username: str | None = Field(default=None, min_length=1)
    password_env: EnvName | None = None
    folder: str = Field(default="INBOX", min_length=1)
    # A PEM file of the CA(s) to trust for the IMAP server instead of the system's store.
    ca_file: CaFile | None = None
    # From $password_env via load_settings, never from the file; SecretStr keeps it out of repr.
    password: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _imap_has_a_login(self) -> BouncesSettings:
        if self.kind == "imap" and not (self.host and self.username and self.password_env):
            raise ValueError(
                'kind = "imap" needs host, username and password_env (the name of the '
                "environment variable holding the password)"
            )
        return self

    @field_validator("address")
    @classmethod
    def _room_for_token(cls, address: str) -> str:
        """Each delivery's address is `<local>+<token>@<domain>`: a "+" of its own would
        make the relay's `recipient_delimiter` split it in the wrong place."""
        local, _, _ = address.rpartition("@")
        if "+" in local or not address.isascii():
            raise ValueError(
                f'expected a plain ASCII address without "+" (such as "bounces@example.org"),'
                f" got {address!r}: mailer adds +<token> to it for each delivery"
            )
        return address


class RetentionSettings(_Table):
    """How long after an event's end (or its deletion) its personal data is kept."""

    keep: Annotated[timedelta | None, BeforeValidator(_keep)] = DEFAULT_KEEP
    # A file holding the secret key (at least 32 bytes); unset, the key is kept in the
    # database (docs/operator-guide.md "Personal data" says what each place protects).
    key_file: ConfigPath | None = None


def bounces_problems(
    raw: dict[str, Any], source: str, *, needs_password: bool
) -> list[ConfigError]:
    """The IMAP password $bounces.password_env names moved into `[bounces]`, taken out of the
    environment as it is read (config_transport.transport_problems says why); one in the file
    refused."""
    bounces = raw.get("bounces")
    if not isinstance(bounces, dict):
        return []
    problems = []
    if bounces.pop("password", None) is not None:
        message = (
            "a password never sits in a file; name its environment variable in bounces.password_env"
        )
        problems.append(ConfigError(message, source=source, key="bounces.password"))
    name = bounces.get("password_env")
    if isinstance(name, str) and ENV_NAME.fullmatch(name):
        value = os.environ.pop(name, None)
        if value:
            bounces["password"] = SecretStr(value)
        elif needs_password:
            message = f"environment variable {name} is {'not set' if value is None else 'empty'}"
            problems.append(ConfigError(message, source=source, key="bounces.password_env"))
    return problems
