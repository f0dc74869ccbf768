"""The one exception family mailer raises: each error says which file, which key, what was wrong."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# What a terminal or a log reader obeys instead of showing: C0 and C1 controls (line breaks,
# the escape that starts a colour or cursor sequence), DEL, the Unicode line and paragraph
# separators, and the bidirectional overrides that reorder what follows them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` as one line that shows every character: each control written as Python writes
    it in a string (`\\n`, `\\x1b`). A file may be named `x<newline>ok  y.toml`: printed raw,
    that forges a line of output."""
    return _UNPRINTABLE.sub(lambda found: repr(found.group())[1:-1], text)


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
        shown = printable(self.source) if self.source else None  # names are organisers' data
        where = ": ".join(part for part in (shown, self.key) if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(MailerError):
    """The service configuration is unusable: the service must not start (exit 2)."""


def unusable_database(database: object, exc: Exception) -> ConfigError:
    """A database that cannot be used (malformed, the server gone), in one line naming it."""
    return ConfigError(f"the database {database} cannot be used: {exc}", key="paths.database")


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
