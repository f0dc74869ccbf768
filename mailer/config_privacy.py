"""`[bounces]` (SPEC §11) and `[retention]` (SPEC §13): where bounces are read from, and how
long participants' personal data is kept. Beside config.py, which would pass 300 lines."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from mailer.config_values import Address, ConfigPath
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
    """The bounce address and the Maildir its mail is delivered to."""

    address: Address
    kind: Literal["maildir"] = "maildir"
    path: ConfigPath = Path("var/bounces")

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
