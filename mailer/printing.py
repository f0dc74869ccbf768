"""What the commands print: lines that may quote data, and the check, send, status and
rehearse results, as rich tables on a terminal and plain text in a pipe."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from babel.dates import format_timedelta
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailer.dates import weekday_time
from mailer.delivery import DeliveryState, Verdict
from mailer.errors import printable
from mailer.timing import written_duration

# Named for the type checker only: `mailer status` prints its table with this module, and must
# not load the planner, templates and rendering with it (check's printers import what
# they use when they run).
if TYPE_CHECKING:
    from mailer.errors import MailerError
    from mailer.manual_send import SendReport, TestSend
    from mailer.planning import EditEffect
    from mailer.rehearsal import Rehearsal
    from mailer.sources import Loaded
    from mailer.store import Purged

# Not a terminal (a pipe, a log): wide enough that tables do not wrap every cell.
PIPE_WIDTH = 160
# emoji=False: an error quoting ":smile:" from a file must print as written.
out = Console(
    highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH
)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def shown(value: object) -> Text:
    """Data (a title, a reply, a file name) as a table cell: rich markup in it is text, not
    style (a title with `[/bold]` must not crash the table), and control characters are
    written out, not obeyed by the terminal."""
    return Text(printable(str(value)))


def say(console: Console, line: str) -> None:
    """Print one line of our own that may quote data: shown as written, one line."""
    console.print(printable(line), markup=False)


def print_checked(
    loaded: Loaded,
    problems: list[MailerError],
    *,
    language: str,
    effect: EditEffect | None = None,
) -> None:
    """One checked event file: its notes and problems, or what it would send and when (the
    weekday shown, SPEC §14), and what saving it would change if its event is in force."""
    from mailer.advice import WARNING
    from mailer.foresight import effect_lines

    for note in loaded.notes:
        say(out, note if note.startswith(WARNING) else f"note {note}")
    for problem in problems:
        say(out, str(problem))
    if not problems and loaded.event:
        event = loaded.event
        deliveries = sum(len(event.recipients_of(m)) for m in event.mails)
        say(
            out,
            f"ok  {loaded.source}: {len(event.mails)} mails, "
            f"{len(event.recipients)} recipients, {deliveries} deliveries",
        )
        for mail in event.mails:
            due = weekday_time(mail.due.astimezone(event.timezone), language)
            say(out, f"    {mail.name}: {due}, to {len(event.recipients_of(mail))}")
        for line in effect_lines(effect, event.timezone, language=language) if effect else []:
            say(out, f"    {line}")


def check_document(
    loaded: Loaded, problems: list[MailerError], effect: EditEffect | None
) -> dict[str, Any]:
    """One checked event file as `check --json` gives it; `changes` is null for an event not
    in force (nothing to compare with)."""
    from mailer.foresight import effect_document

    event = loaded.event if not problems else None
    mails = [
        {
            "name": m.name,
            "due": m.due.isoformat(),
            "expires": m.expires.isoformat(),
            "to": list(m.to),
            "recipients": len(event.recipients_of(m)),
        }
        for event in ([event] if event else [])
        for m in event.mails
    ]
    return {
        "id": loaded.id,
        "file": str(loaded.source),
        "valid": not problems,
        "problems": [str(p) for p in problems],
        "notes": list(loaded.notes),
        "mails": mails,
        "changes": effect_document(effect, event.timezone) if effect and event else None,
    }


def print_sent(report: SendReport) -> None:
    """What `mailer send` did: each delivery once, as `status` counts them."""
    counted = [f"{report.states[s]} {s}" for s in DeliveryState if report.states[s]]
    say(out, ", ".join(counted) or "nothing to send")
    if report.paused_because:
        say(out, f"sending paused: {report.paused_because}")


def print_purged(purged: Purged, *, keep: timedelta | None, dry_run: bool) -> None:
    """What `mailer purge` erased (or, dry, would erase): events, deliveries, bytes."""
    if keep is None:
        say(out, 'nothing erased: [retention] keep = "" keeps everything')
        return
    verb = "would erase" if dry_run else "erased"
    say(
        out,
        f"{verb} the personal data of {_count(len(purged.events), 'event')} "
        f"({_count(purged.deliveries, 'delivery', 'deliveries')}, {purged.bytes} bytes) "
        f"that ended more than {written_duration(keep)} ago",
    )
    for event in purged.events:
        say(out, f"  {event}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def print_test_sent(tried: TestSend) -> None:
    """What `mailer send --test` did; the server's reply when it did not take the message."""
    if tried.outcome.verdict is Verdict.SENT:
        say(out, f"test mail sent to {tried.to}, as {tried.rendered_as} gets it; nothing recorded")
    else:
        say(out, f"test mail to {tried.to} not sent: {tried.outcome.reply}")


def print_rehearsal(result: Rehearsal, *, language: str) -> None:
    """The rehearsed timeline, one row a mail, and where its messages are."""
    table = Table(
        "due",
        "mail",
        "to",
        "languages",
        "attachments",
        "outcome",
        title=shown(f"{result.event.id}: {result.event.title}"),
        title_justify="left",
    )
    for row in result.timeline:
        languages = ", ".join(f"{n} {lang}" for lang, n in sorted(row.languages.items()))
        cells = (
            f"{weekday_time(row.due, language)} {row.due.strftime('%Z')}",
            row.mail,
            ", ".join(row.to),
            languages or "nobody yet",
            ", ".join(row.attachments),
            ", ".join(f"{n} {s}" for s, n in row.states.items()),
        )
        table.add_row(*map(shown, cells))
    out.print(table)
    say(out, f"Maildir with every message: {result.maildir}")


def print_status(report: dict[str, Any], *, now: datetime, language: str) -> None:
    """The status tables; every value from the database is shown as text (`shown`)."""
    for event in report["events"]:
        if not event["mails"]:  # never valid (or no mails): its error, not an empty table
            out.print(_title(event))
            invalid = event["error"] and not event["in_force"]
            say(out, "nothing is planned until the file is fixed" if invalid else "no mails")
            continue
        table = Table("mail", "due", "", "deliveries", title=_title(event), title_justify="left")
        for mail in event["mails"]:
            counts = ", ".join(f"{n} {state}" for state, n in mail["counts"].items() if n)
            table.add_row(
                shown(mail["name"]),
                _local(mail["due"], language),
                _relative(mail["due"], now),
                counts or "nobody yet",
            )
            if mail["problem"]:
                problem = Text.assemble(("last problem:", "red"), " ", shown(mail["problem"]))
                table.add_row("", "", "", problem)
        out.print(table)
        _print_deliveries(event["mails"], language)
    _print_nodes(report.get("nodes", []), now, language)


def _print_nodes(nodes: list[dict[str, Any]], now: datetime, language: str) -> None:
    """The `mailer run` processes on this database and which one plans (SPEC §9)."""
    if not nodes:
        return
    table = Table("node", "pid", "started", "last seen", "", title="nodes", title_justify="left")
    for node in nodes:
        role = "planner" if node["planner"] else "sends"
        table.add_row(
            shown(node["host"]),
            str(node["pid"]),
            _local(node["started"], language),
            _relative(node["last_seen"], now),
            role if node["live"] else Text("not seen: stopped?", style="red"),
        )
    out.print(table)


def _print_deliveries(mails: list[dict[str, Any]], language: str) -> None:
    """Per recipient, for the mail `status EVENT MAIL` names."""
    for mail in mails:
        if "deliveries" in mail:
            detail = Table("recipient", "state", "attempts", "last reply", "sent at")
            for d in mail["deliveries"]:
                detail.add_row(
                    shown(d["recipient"]),
                    shown(d["state"]),
                    str(d["attempts"]),
                    shown(d["last_reply"] or ""),
                    _local(d["sent_at"], language),
                )
            out.print(detail)


def _title(event: dict[str, Any]) -> Text:
    """ "id: title", with whether the file is gone or invalid, and why."""
    title = shown(f"{event['id']}: {event['title'] or event['file']}")
    if event["removed"]:
        title.append(" (file removed; history kept)")
    if event.get("held"):
        title.append_text(Text(" (held: hold = true, nothing is sent)", "yellow"))
    if event["error"]:
        state = "the last valid version is in force" if event["in_force"] else "not in force"
        title.append_text(Text.assemble("\n", (f"invalid; {state}:", "red"), " "))
        title.append_text(shown(event["error"]))
    return title


def _relative(iso: str, now: datetime) -> str:
    """ "in 3 days", "2 hours ago": what an organiser wants to know at a glance."""
    delta = datetime.fromisoformat(iso) - now
    return format_timedelta(delta, add_direction=True, locale="en", threshold=1.5)


def _local(iso: str | None, language: str) -> str:
    """ "2027-05-26T09:00:00+02:00" -> "ons 2027-05-26 09:00" for a table."""
    return "" if iso is None else weekday_time(datetime.fromisoformat(iso), language)
