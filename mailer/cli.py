"""The `mailer` command line: parses, calls one function, prints. The only module that exits."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from babel.dates import format_timedelta
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from mailer.clock import SystemClock
from mailer.config import Settings, find_config, load_settings
from mailer.delivery import DeliveryState
from mailer.errors import ConfigError, MailerError, Problems, printable
from mailer.outbox import check_events, write_previews
from mailer.rehearsal import rehearse as run_rehearsal
from mailer.service import read_status, requeue_failed, send_now, serve
from mailer.sources import Loaded, find_event_files

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

# Not a terminal (a pipe, a log): wide enough that tables do not wrap every cell.
PIPE_WIDTH = 160
# emoji=False: an error quoting ":smile:" from a file must print as written.
out = Console(
    highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH
)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)

CONFIG_HELP = "Configuration file (else $MAILER_CONFIG, ./config.toml, ./config.example.toml)."


def _or_given_before(ctx: click.Context, _: click.Parameter, value: Path | None) -> Path | None:
    """A command's own `-c`, else the one given before it (`mailer -c X check`)."""
    if value is None and ctx.parent is not None:
        return ctx.parent.params.get("config_path")
    return value


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    callback=_or_given_before,
    help=CONFIG_HELP,
)


def shown(value: object) -> Text:
    """Data (a title, a reply, a file name) as a table cell: rich markup in it is text, not
    style (a title with `[/bold]` must not crash the table), and control characters are
    written out, not obeyed by the terminal."""
    return Text(printable(str(value)))


def say(console: Console, line: str) -> None:
    """Print one line of our own that may quote data: shown as written, one line."""
    console.print(printable(line), markup=False)


def reports_errors(command: Callable[..., int]) -> Callable[..., None]:
    """Turn a MailerError into its lines on stderr and our exit code: 2 if the configuration
    is at fault (the service cannot start: systemd must not restart it), else 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = command(*args, **kwargs)
        except MailerError as exc:
            problems = exc.problems if isinstance(exc, Problems) else (exc,)
            for problem in problems:
                say(err, str(problem))
            is_config = any(isinstance(p, ConfigError) for p in problems)
            code = EXIT_USAGE if is_config else EXIT_PROBLEMS
        sys.exit(code)

    return wrapper


def settings_from(config_path: Path | None, *, sends: bool = False) -> Settings:
    """The settings; only a command that sends (`sends=True`) needs the SMTP password set."""
    return load_settings(find_config(config_path, cwd=Path(".")), needs_password=sends)


def schedules_of(settings: Settings, config_path: Path | None) -> Path:
    """The schedules folder. Missing, it is the configuration's fault (exit 2): the service
    could never work, and systemd's RestartPreventExitStatus=2 then stops restarting it."""
    folder = settings.paths.schedules
    if not folder.is_dir():
        raise ConfigError(
            f"no folder {folder}: create it, or set paths.schedules to the folder of event files",
            source=find_config(config_path, cwd=Path(".")),
            key="paths.schedules",
        )
    return folder


def event_files_in(path: Path) -> list[Path]:
    """What a path on the command line names: a folder event by its folder
    (`schedules/seminarium/`), a folder of events (`schedules/`), or one event file."""
    if path.is_dir():
        return [path / "event.toml"] if (path / "event.toml").exists() else find_event_files(path)
    return [path]


@click.group()
@click.option(
    "-c", "--config", "config_path", type=click.Path(path_type=Path), default=None, help=CONFIG_HELP
)
@click.version_option(package_name="mailer", prog_name="mailer")
def main(config_path: Path | None) -> None:
    """Sends the timed emails around an event: invitations, reminders, reports, follow-ups."""


@main.command()
@config_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@reports_errors
def check(config_path: Path | None, paths: tuple[Path, ...]) -> int:
    """Validate config, event files, CSVs and templates; render every mail for every recipient."""
    settings = settings_from(config_path)
    named = [source for path in paths for source in event_files_in(path)]
    sources = named or find_event_files(schedules_of(settings, config_path))
    failed = 0
    # A bar on a terminal (checking 1,000 events takes a while); nothing in a pipe or a log.
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("checking", total=len(sources))
        for loaded, problems in check_events(settings, sources, now=SystemClock().now()):
            progress.advance(task)
            failed += bool(problems)
            print_checked(loaded, problems)
    say(out, f"{len(sources)} event files checked, {failed} with problems")
    return EXIT_PROBLEMS if failed else EXIT_OK


def print_checked(loaded: Loaded, problems: list[MailerError]) -> None:
    for note in loaded.notes:
        say(out, f"note {note}")
    for problem in problems:
        say(out, str(problem))
    if not problems and loaded.event:
        deliveries = sum(len(loaded.event.recipients_of(m)) for m in loaded.event.mails)
        say(
            out,
            f"ok  {loaded.source}: {len(loaded.event.mails)} mails, "
            f"{len(loaded.event.recipients)} recipients, {deliveries} deliveries",
        )


@main.command()
@config_option
@click.argument("event_id")
@click.argument("mail_name")
@click.option("--recipient", "address", help="Whose mail to render (default: one per language).")
@click.option(
    "--language",
    help="Render it in this language, as the recipient (default: the mail's first) would read it.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("preview"),
    show_default=True,
    help="Where to write the .eml and .html files.",
)
@reports_errors
def preview(
    config_path: Path | None,
    event_id: str,
    mail_name: str,
    address: str | None,
    language: str | None,
    out_dir: Path,
) -> int:
    """Render what a recipient would get, as .eml (and .html), without sending."""
    settings = settings_from(config_path)
    written = write_previews(
        settings,
        event_id,
        mail_name,
        address=address,
        out_dir=out_dir,
        now=SystemClock().now(),
        language=language,
    )
    for path in written:
        say(out, str(path))
    return EXIT_OK


@main.command()
@config_option
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line, for log shippers.",
)
@reports_errors
def run(config_path: Path | None, log_format: str) -> int:
    """Run the service in the foreground (for systemd or a terminal)."""
    settings = settings_from(config_path, sends=True)
    schedules_of(settings, config_path)
    configure_logging(log_format, zone=ZoneInfo(settings.sender.timezone))
    asyncio.run(serve(settings, clock=SystemClock()))
    return EXIT_OK


@main.command()
@config_option
@click.argument("event_id", required=False)
@click.argument("mail_name", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@reports_errors
def status(
    config_path: Path | None, event_id: str | None, mail_name: str | None, as_json: bool
) -> int:
    """Per event and mail: due time and counts per state; per recipient with MAIL."""
    settings = settings_from(config_path)
    report = asyncio.run(read_status(settings, event_id=event_id, mail=mail_name))
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_status(report, now=SystemClock().now())
    return EXIT_OK


@main.command()
@config_option
@click.argument("event_id")
@click.argument("mail_name")
@click.option("--recipient", "address", help="Only this recipient.")
@reports_errors
def send(config_path: Path | None, event_id: str, mail_name: str, address: str | None) -> int:
    """Send that mail now, to those who have not had it."""
    settings = settings_from(config_path, sends=True)
    schedules_of(settings, config_path)
    configure_logging("text", zone=ZoneInfo(settings.sender.timezone))
    recipient = address.lower() if address else None
    report = asyncio.run(
        send_now(settings, event_id, mail_name, recipient=recipient, clock=SystemClock())
    )
    counted = [f"{report.states[s]} {s}" for s in DeliveryState if report.states[s]]
    say(out, ", ".join(counted) or "nothing to send")  # each once, as `status` counts them
    if report.paused_because:
        say(out, f"sending paused: {report.paused_because}")
    return EXIT_OK if report.all_sent else EXIT_PROBLEMS


@main.command()
@config_option
@click.argument("event_id")
@click.argument("mail_name", required=False)
@reports_errors
def retry(config_path: Path | None, event_id: str, mail_name: str | None) -> int:
    """Put failed deliveries back in the queue."""
    settings = settings_from(config_path)
    count = asyncio.run(requeue_failed(settings, event_id, mail_name, now=SystemClock().now()))
    say(out, f"{count} failed deliveries queued again")
    return EXIT_OK


@main.command()
@config_option
@click.argument("event_file", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--seconds", default=5.0, show_default=True, help="How long the whole timeline takes to play."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="A new or empty folder for the scratch Maildir and database.",
)
@reports_errors
def rehearse(
    config_path: Path | None, event_file: Path, seconds: float, out_dir: Path | None
) -> int:
    """Play the event's whole timeline in seconds into a scratch Maildir; touches no real state."""
    settings = settings_from(config_path)
    if event_file.is_dir():  # a folder event, named by its folder
        event_file = event_file / "event.toml"
    result = asyncio.run(
        run_rehearsal(settings, event_file, out=out_dir, seconds=seconds, now=SystemClock().now())
    )
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
        table.add_row(
            *map(
                shown,
                (
                    row.due.strftime("%Y-%m-%d %H:%M %Z"),
                    row.mail,
                    ", ".join(row.to),
                    ", ".join(f"{n} {lang}" for lang, n in sorted(row.languages.items()))
                    or "nobody yet",
                    ", ".join(row.attachments),
                    ", ".join(f"{n} {s}" for s, n in row.states.items()),
                ),
            )
        )
    out.print(table)
    say(out, f"Maildir with every message: {result.maildir}")
    return EXIT_OK


def print_status(report: dict[str, Any], *, now: datetime) -> None:
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
                _local(mail["due"]),
                _relative(mail["due"], now),
                counts or "nobody yet",
            )
            if mail["problem"]:
                problem = Text.assemble(("last problem:", "red"), " ", shown(mail["problem"]))
                table.add_row("", "", "", problem)
        out.print(table)
        for mail in event["mails"]:
            if "deliveries" in mail:
                detail = Table("recipient", "state", "attempts", "last reply", "sent at")
                for d in mail["deliveries"]:
                    detail.add_row(
                        shown(d["recipient"]),
                        shown(d["state"]),
                        str(d["attempts"]),
                        shown(d["last_reply"] or ""),
                        _local(d["sent_at"]),
                    )
                out.print(detail)


def _title(event: dict[str, Any]) -> Text:
    """ "id: title", with whether the file is gone or invalid, and why."""
    title = shown(f"{event['id']}: {event['title'] or event['file']}")
    if event["removed"]:
        title.append(" (file removed; history kept)")
    if event["error"]:
        state = "the last valid version is in force" if event["in_force"] else "not in force"
        title.append_text(Text.assemble("\n", (f"invalid; {state}:", "red"), " "))
        title.append_text(shown(event["error"]))
    return title


def _relative(iso: str, now: datetime) -> str:
    """ "in 3 days", "2 hours ago": what an organiser wants to know at a glance."""
    delta = datetime.fromisoformat(iso) - now
    return format_timedelta(delta, add_direction=True, locale="en", threshold=1.5)


def _local(iso: str | None) -> str:
    """ "2027-05-26T09:00:00+02:00" -> "2027-05-26 09:00" for a table."""
    return "" if iso is None else iso[:16].replace("T", " ")


def configure_logging(log_format: str, *, zone: ZoneInfo) -> None:
    """Log to stderr (systemd's journal and Docker collect it), with times in `zone`, the
    one `status` shows, offset included: a log line and a status row read the same clock
    whatever the machine's own zone (a container's is often UTC)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(zone)
        if log_format == "json"
        else TextFormatter(zone, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for chatty in ("apscheduler", "watchfiles"):  # their INFO lines are not the operator's news
        logging.getLogger(chatty).setLevel(logging.WARNING)


class TextFormatter(logging.Formatter):
    """Times as `2026-12-02 09:23:05+01:00`: local to the events, with the UTC offset."""

    def __init__(self, zone: ZoneInfo, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.when(record).isoformat(sep=" ", timespec="seconds")

    def when(self, record: logging.LogRecord) -> datetime:
        return datetime.fromtimestamp(record.created, self.zone)


class JsonFormatter(TextFormatter):
    """One object a line; `time` in ISO 8601 with milliseconds and the offset."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.when(record).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )
