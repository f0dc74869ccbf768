"""`[web]`: where `mailer run` serves the organisers' page, /metrics and /healthz (SPEC §12).

Its own module beside config.py (which would pass 300 lines with it): the address rule and
the password taken from the environment, as `transport.password_env` is.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mailer.config_values import ENV_NAME, EnvName
from mailer.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8025"


class WebSettings(BaseModel):
    """`listen` is "host:port" ("[::1]:8025" for IPv6), or "" for no page at all."""

    # As config._Section (not imported from there: config.py imports this module).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_default=True, hide_input_in_errors=True
    )

    listen: str = DEFAULT_LISTEN
    username: str | None = Field(default=None, min_length=1)
    password_env: EnvName | None = None
    # From $password_env via load_settings, never from the file; SecretStr keeps it out of repr.
    password: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        if listen:
            split_listen(listen)
        return listen

    @model_validator(mode="after")
    def _login_has_password(self) -> WebSettings:
        """A login name without a password, or the reverse, is half a login: a typo."""
        if (self.username is None) != (self.password_env is None):
            raise ValueError("set both web.username and web.password_env, or neither")
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """("127.0.0.1", 8025) from "127.0.0.1:8025", ("::1", 8025) from "[::1]:8025"."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f'expected "host:port" (such as "{DEFAULT_LISTEN}"), or "" for no page, got {listen!r}'
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"; any other name may resolve to anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web_problems(raw: dict[str, Any], source: str, *, needs_password: bool) -> list[ConfigError]:
    """A page off loopback without a login, refused before anything binds (SPEC §12: it
    shows recipients' addresses to the network); and the password $web.password_env names
    moved into `[web]`, taken out of the environment as it is read
    (config_transport.transport_problems says why)."""
    web = raw.get("web")
    if not isinstance(web, dict):
        return []
    problems = []
    listen = web.get("listen", DEFAULT_LISTEN)
    if isinstance(listen, str) and listen and not _has_login(web):
        try:
            host, _port = split_listen(listen)
        except ValueError:
            host = "localhost"  # the format is pydantic's to report
        if not is_loopback(host):
            message = (
                f"a page on {listen} shows recipients' addresses: set web.username and "
                f"web.password_env, or listen on 127.0.0.1"
            )
            problems.append(ConfigError(message, source=source, key="web.listen"))
    if web.pop("password", None) is not None:
        message = (
            "a password never sits in a file; name its environment variable in web.password_env"
        )
        problems.append(ConfigError(message, source=source, key="web.password"))
    name = web.get("password_env")
    if isinstance(name, str) and ENV_NAME.fullmatch(name):
        value = os.environ.pop(name, None)
        if value:
            web["password"] = SecretStr(value)
        elif needs_password:
            message = f"environment variable {name} is {'not set' if value is None else 'empty'}"
            problems.append(ConfigError(message, source=source, key="web.password_env"))
    return problems


def _has_login(web: dict[str, Any]) -> bool:
    return bool(web.get("username")) and bool(web.get("password_env"))
