"""The `mailer` command line: each command parses, loads settings, calls one function of
`commands.py`, prints (`printing.py`) and returns its exit code. The only module that exits.

A command imports what it needs when it runs: `mailer --help`, or `status` from a script,
should not wait a second for the whole service (templates, calendars, the web server) to
import. Only click and what is light are imported here.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailer.clock import SystemClock
from mailer.errors import ConfigError, MailerError, Problems

if TYPE_CHECKING:
    from mailer.config import Settings

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

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


def reports_errors(command: Callable[..., int]) -> Callable[..., None]:
    """Turn a MailerError into its lines on stderr and our exit code: 2 if the configuration
    is at fault (the service cannot start: systemd must not restart it), else 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = command(*args, **kwargs)
        except MailerError as exc:
            from mailer.printing import err, say

            problems = exc.problems if isinstance(exc, Problems) else (exc,)
            for problem in problems:
                say(err, str(problem))
            is_config = any(isinstance(p, ConfigError) for p in problems)
            code = EXIT_USAGE if is_config else EXIT_PROBLEMS
        sys.exit(code)

    return wrapper


def settings_from(config_path: Path | None, *, sends: bool = False) -> Settings:
    """The settings; only a command that sends (`sends=True`) needs the SMTP password set."""
    from mailer.config import find_config, load_settings

    return load_settings(find_config(config_path, cwd=Path(".")), needs_password=sends)


def schedules_of(settings: Settings, config_path: Path | None) -> Path:
    """The schedules folder. Missing, it is the configuration's fault (exit 2): the service
    could never work, and systemd's RestartPreventExitStatus=2 then stops restarting it."""
    from mailer.config import find_config

    folder = settings.paths.schedules
    if not folder.is_dir():
        raise ConfigError(
            f"no folder {folder}: create it, or set paths.schedules to the folder of event files",
            source=find_config(config_path, cwd=Path(".")),
            key="paths.schedules",
        )
    return folder


def _an_address(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    """`--test ADDR` must be an address: a typo is a usage error (exit 2), before anything."""
    from mailer.addresses import InvalidAddress, normalize_address

    if value is None:
        return None
    try:
        return normalize_address(value.strip())
    except InvalidAddress as exc:
        raise click.BadParameter(f"{value!r} is not an email address: {exc}") from exc


def event_files_in(path: Path) -> list[Path]:
    """What a path on the command line names: a folder event by its folder
    (`schedules/seminarium/`), a folder of events (`schedules/`), or one event file."""
    from mailer.sources import find_event_files

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
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@reports_errors
def check(config_path: Path | None, paths: tuple[Path, ...], as_json: bool) -> int:
    """Validate config, event files, CSVs and templates; render every mail for every recipient;
    for an event in force, say what saving the file would change."""
    from rich.progress import Progress

    from mailer import commands
    from mailer.printing import check_document, err, out, print_checked, say
    from mailer.sources import find_event_files

    settings = settings_from(config_path)
    named = [source for path in paths for source in event_files_in(path)]
    sources = named or find_event_files(schedules_of(settings, config_path))
    failed, documents = 0, []
    # A bar on a terminal (checking 1,000 events takes a while); nothing in a pipe or a log.
    with (
        Progress(console=err, transient=True, disable=not err.is_terminal) as progress,
        commands.Foresight(settings) as foresight,
    ):
        task = progress.add_task("checking", total=len(sources))
        for loaded, problems in commands.check_events(settings, sources, now=SystemClock().now()):
            progress.advance(task)
            failed += bool(problems)
            effect = None if problems else foresight.effect_of(loaded)
            if as_json:
                documents.append(check_document(loaded, problems, effect))
            else:
                print_checked(loaded, problems, language=settings.sender.language, effect=effect)
    if as_json:
        document = {"events": documents, "not_compared": foresight.unavailable}
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        if foresight.unavailable:
            say(out, f"note not compared with the plans in force: {foresight.unavailable}")
        say(out, f"{len(sources)} event files checked, {failed} with problems")
    return EXIT_PROBLEMS if failed else EXIT_OK


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
    from mailer import commands
    from mailer.printing import out, say

    settings = settings_from(config_path)
    written = commands.write_previews(
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
    import asyncio
    from zoneinfo import ZoneInfo

    from mailer import commands
    from mailer.logs import configure_logging

    settings = settings_from(config_path, sends=True)
    schedules_of(settings, config_path)
    configure_logging(log_format, zone=ZoneInfo(settings.sender.timezone))
    asyncio.run(commands.serve(settings, clock=SystemClock()))
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
    import asyncio

    from mailer.status import read_status

    settings = settings_from(config_path)
    now = SystemClock().now()
    report = asyncio.run(read_status(settings, event_id=event_id, mail=mail_name, now=now))
    if as_json:
        # Indented for a person at a terminal; one line for a script (json's C encoder only
        # works unindented: 0.09 s of a 0.3 s answer at 200,000 deliveries).
        indent = 2 if sys.stdout.isatty() else None
        click.echo(json.dumps(report, ensure_ascii=False, indent=indent))
    else:
        from mailer.printing import print_status  # rich: only for the table

        print_status(report, now=now, language=settings.sender.language)
    return EXIT_OK


@main.command()
@config_option
@click.argument("event_id")
@click.argument("mail_name")
@click.option(
    "--recipient", "address", help="Only this recipient (with --test: rendered as this one)."
)
@click.option(
    "--test",
    "test_to",
    metavar="ADDR",
    callback=_an_address,
    help='Send one message to ADDR only, "[TEST] " before the subject; nothing is recorded.',
)
@reports_errors
def send(
    config_path: Path | None,
    event_id: str,
    mail_name: str,
    address: str | None,
    test_to: str | None,
) -> int:
    """Send that mail now, to those who have not had it (or a test mail to yourself)."""
    import asyncio
    from zoneinfo import ZoneInfo

    from mailer import commands
    from mailer.delivery import Verdict
    from mailer.logs import configure_logging
    from mailer.printing import print_sent, print_test_sent

    settings = settings_from(config_path, sends=True)
    schedules_of(settings, config_path)
    configure_logging("text", zone=ZoneInfo(settings.sender.timezone))
    if test_to is not None:
        tried = asyncio.run(
            commands.send_test(
                settings, event_id, mail_name, to=test_to, as_=address, clock=SystemClock()
            )
        )
        print_test_sent(tried)
        return EXIT_OK if tried.outcome.verdict is Verdict.SENT else EXIT_PROBLEMS
    recipient = address.lower() if address else None
    report = asyncio.run(
        commands.send_now(settings, event_id, mail_name, recipient=recipient, clock=SystemClock())
    )
    print_sent(report)
    return EXIT_OK if report.all_sent else EXIT_PROBLEMS


@main.command()
@config_option
@click.argument("event_id")
@click.argument("mail_name", required=False)
@reports_errors
def retry(config_path: Path | None, event_id: str, mail_name: str | None) -> int:
    """Put failed deliveries back in the queue."""
    import asyncio

    from mailer import commands
    from mailer.printing import out, say

    settings = settings_from(config_path)
    now = SystemClock().now()
    count = asyncio.run(commands.requeue_failed(settings, event_id, mail_name, now=now))
    say(out, f"{count} failed deliveries queued again")
    return EXIT_OK


@main.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Only say what would be erased.")
@reports_errors
def purge(config_path: Path | None, dry_run: bool) -> int:
    """Erase participants' personal data now where [retention] keep has run out."""
    import asyncio

    from mailer import commands
    from mailer.printing import print_purged

    settings = settings_from(config_path)
    purged = asyncio.run(commands.purge_now(settings, clock=SystemClock(), dry_run=dry_run))
    print_purged(purged, keep=settings.retention.keep, dry_run=dry_run)
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
    import asyncio

    from mailer import commands
    from mailer.printing import print_rehearsal

    settings = settings_from(config_path)
    if event_file.is_dir():  # a folder event, named by its folder
        event_file = event_file / "event.toml"
    result = asyncio.run(
        commands.rehearse(
            settings, event_file, out=out_dir, seconds=seconds, now=SystemClock().now()
        )
    )
    print_rehearsal(result, language=settings.sender.language)
    return EXIT_OK


@main.command()
@config_option
@click.option(
    "--to", "url", required=True, help="The empty PostgreSQL database: postgresql://user@host/db."
)
@reports_errors
def migrate(config_path: Path | None, url: str) -> int:
    """Copy the SQLite database whole into an empty PostgreSQL database (service stopped)."""
    import asyncio

    from mailer import commands
    from mailer.printing import out, say

    settings = settings_from(config_path)
    copied = asyncio.run(commands.migrate_to(settings, url))
    counts = ", ".join(f"{count} {table}" for table, count in copied.items())
    say(out, f"copied {counts}; now set paths.database to the URL and start the service")
    return EXIT_OK
