"""The values the store takes and gives: claims, attempts, versions in force, report rows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mailer.delivery import DeliveryState
from mailer.errors import ConfigError
from mailer.plan import Plan


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for sending: state `sending`, leased to the node that claimed it,
    until its outcome is recorded."""

    id: int
    event: str
    mail: str
    recipient: str
    due: float
    expires: float
    attempts: int
    message_id: str
    first_attempt: float | None = None


@dataclass(frozen=True)
class Narrow:
    """One mail of one event, or one recipient of it: what `mailer send` asks for."""

    event: str
    mail: str
    recipient: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One attempt's outcome and the state it leads to, written in one transaction."""

    delivery: int
    at: float
    verdict: str
    code: int | None
    reply: str
    state: DeliveryState
    attempts: int
    next_attempt: float | None = None


@dataclass(frozen=True)
class File:
    """An attachment of a version in force, as it was checked (SPEC §9: stored whole, by
    content digest, each content once however many events and versions attach it)."""

    name: str  # as the mail's `attach` names it, inside the event's folder
    digest: str  # sha256 of the content, hex
    data: bytes


@dataclass(frozen=True)
class Version:
    """An event's valid version as kept in force (its texts, so that it can be parsed again
    while the file is invalid, across restarts too) and the plan that brings it in."""

    event_id: str
    source: str
    title: str
    digest: str
    toml: str
    csv: str | None
    mails: str  # JSON: name, due, expires, to, calendar
    plan: Plan | None = None  # None: the stored deliveries already match
    files: tuple[File, ...] = ()  # its attachments, as checked
    facts: str | None = None  # JSON: what its calendar entry shows (notices.Facts)
    held: bool = False  # `hold = true`: planned, nothing sent (SPEC §10)
    notify: bool = True  # `notify_changes`
    ends: float | None = None  # the event's end: its personal data is kept `retention.keep` after
    stamp: str | None = None  # its files' metadata when read (file_stamps.py)


@dataclass(frozen=True)
class EventRow:
    id: str
    source: str
    title: str
    digest: str | None  # of the last valid version; None if there never was one
    error: str | None
    removed: bool
    mails: str = "[]"
    held: bool = False
    stamp: str | None = None  # file_stamps.py: the files unchanged since, known without reading


@dataclass(frozen=True)
class CalendarRow:
    """An event's calendar identity (SPEC §10): its SEQUENCE, the facts last announced and
    those before them, and a change waiting to settle (`pending` at `settle_at`)."""

    event: str
    sequence: int
    announced: str  # JSON facts at `sequence`
    previous: str | None  # JSON facts at `sequence - 1`
    pending: str | None = None
    settle_at: float | None = None
    notify: bool = True


@dataclass(frozen=True)
class MailCounts:
    """One mail of one event as `mailer status` shows it."""

    event: str
    mail: str
    due: float
    expires: float
    counts: dict[str, int]
    problem: str | None = None  # a reply of a retrying or failed delivery: what went wrong


@dataclass(frozen=True)
class EventCounts:
    """One event's deliveries on the organisers' events page: counts per state, and when the
    next one still waiting (scheduled or retrying) goes out."""

    event: str
    counts: dict[str, int]
    next_due: float | None


@dataclass(frozen=True)
class DeliveryRow:
    recipient: str
    state: str
    attempts: int
    last_reply: str | None
    sent_at: float | None
    due: float


@dataclass(frozen=True)
class NodeRow:
    """A `mailer run` process as the database last heard of it (SPEC §9)."""

    id: str
    host: str
    pid: int
    started: float
    last_seen: float
    planner: bool


@dataclass(frozen=True)
class Change:
    """What another node changed (SPEC §9, wake-ups across nodes): "plan" of an event (its
    version in force or its deliveries), "removed" (its file is gone), "queue" (deliveries
    put back: `mailer send`, `mailer retry`, a release), or "changed" (unknown: look)."""

    kind: str
    event: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Bounce:
    """A delivery status notification read from the bounce mailbox (SPEC §11), matched to
    its delivery. `notice` names the message (its Message-ID, or a hash of its bytes), so
    a notice read twice (a crash before it was moved to cur/) is recorded once."""

    notice: str
    delivery: int
    at: float
    status: str  # the DSN's status code: "5.1.1", "4.4.7"
    reply: str  # the diagnostic, as status shows it
    code: int | None = None  # the remote server's SMTP reply code, if the DSN quotes one

    @property
    def is_permanent(self) -> bool:
        """5.x.x bounces the delivery; 4.x.x is a delay, recorded as an attempt only."""
        return self.status.startswith("5")


@dataclass(frozen=True)
class Purged:
    """What a purge erased (or, dry, would erase): SPEC §13's report."""

    events: tuple[str, ...]
    deliveries: int
    bytes: int


class DatabaseGone(ConfigError):
    """The database file opened was deleted or replaced under the running service."""


class StoreFault(Enum):
    """What kind of failure made the database unusable for a moment, or for good."""

    LOCKED = "locked"  # another process or node held what we needed longer than we wait
    FULL = "full"  # no room left to write
    GONE = "gone"  # cannot be reached now: the server stopped, the connection broke
    DAMAGED = "damaged"  # can never work as it is: not a database, malformed, read-only


_FAULT_WORDS = {
    StoreFault.LOCKED: "the database is locked by another process",
    StoreFault.FULL: "the disk under the database is full",
    StoreFault.GONE: "the database cannot be reached",
    StoreFault.DAMAGED: "the database is damaged or read-only",
}


class StoreUnavailable(Exception):
    """A store operation failed because of the database, not of the call: the one error
    the store raises for it, whichever driver it speaks, so that the engine, sending and
    commands pause, retry or stop without importing a driver. The driver's error is the
    `__cause__`; `kind` says which it was."""

    def __init__(self, kind: StoreFault, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{_FAULT_WORDS[self.kind]} ({self.detail})"


def is_damaged(exc: BaseException) -> bool:
    """A database that can never work again as it is: the service stops with one line
    rather than retrying forever."""
    return isinstance(exc, StoreUnavailable) and exc.kind is StoreFault.DAMAGED
