"""The one exception family mailer raises: each error says which file, which key, what was wrong."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class MailerError(Exception):
    """A problem a person can fix, located by file (`source`) and key.

    `str()` reads like `schedules/forlabb.toml: mail[1] "report".to: unknown group "x"`,
    so the CLI can print it as one line with no traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        source: Path | str | None = None,
        key: str | None = None,
        expected: str | None = None,
        got: object = None,
    ) -> None:
        self.message = message
        self.source = str(source) if source is not None else None
        self.key = key
        self.expected = expected
        self.got = got
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.key) if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(MailerError):
    """The service configuration is unusable: the service must not start (exit 2)."""


class InputError(MailerError):
    """An event file, CSV, template or attachment is wrong: `check` exits 1."""


class Problems(MailerError):
    """Several problems found together, so a person sees all of them at once."""

    def __init__(self, problems: Iterable[MailerError]) -> None:
        self.problems: tuple[MailerError, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def is_config(self) -> bool:
        return any(isinstance(p, ConfigError) for p in self.problems)


def raise_if_any(problems: list[MailerError]) -> None:
    """Raise the collected problems as one `Problems`, or do nothing when there are none."""
    if problems:
        raise Problems(problems)


class Collector:
    """Gathers the problems of one file, so validation can report all of them at once."""

    def __init__(self, source: Path | str) -> None:
        self.source = source
        self.problems: list[MailerError] = []

    def add(self, key: str | None, message: str) -> None:
        self.problems.append(InputError(message, source=self.source, key=key))

    def extend(self, problems: Iterable[MailerError]) -> None:
        self.problems.extend(problems)

    def raise_if_any(self) -> None:
        raise_if_any(self.problems)
