"""The `mailer` command line: parses, calls one function, prints. The only module that exits."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mailer.clock import SystemClock
from mailer.config import Settings, find_config, load_settings
from mailer.errors import ConfigError, MailerError, Problems
from mailer.outbox import check_events, write_previews
from mailer.sources import load_events

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Configuration file (else $MAILER_CONFIG, ./config.toml, ./config.example.toml).",
)


def reports_errors(command: Callable[..., int]) -> Callable[..., None]:
    """Turn a MailerError into its lines on stderr and the exit code of SPEC §7."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = command(*args, **kwargs)
        except MailerError as exc:
            problems = exc.problems if isinstance(exc, Problems) else (exc,)
            for problem in problems:
                err.print(str(problem), markup=False)
            is_config = any(isinstance(p, ConfigError) for p in problems)
            code = EXIT_USAGE if is_config else EXIT_PROBLEMS
        sys.exit(code)

    return wrapper


def settings_from(config_path: Path | None) -> Settings:
    return load_settings(find_config(config_path, cwd=Path(".")))


@click.group()
def main() -> None:
    """Sends the timed emails around an event: invitations, reminders, reports, follow-ups."""


@main.command()
@config_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@reports_errors
def check(config_path: Path | None, paths: tuple[Path, ...]) -> int:
    """Validate config, event files, CSVs and templates; render every mail for every recipient."""
    settings = settings_from(config_path)
    results = check_events(settings, list(paths) or None, now=SystemClock().now())
    for loaded, problems in results:
        for problem in problems:
            out.print(str(problem), markup=False)
        if not problems and loaded.event:
            deliveries = sum(len(loaded.event.recipients_of(m)) for m in loaded.event.mails)
            out.print(
                f"ok  {loaded.source}: {len(loaded.event.mails)} mails, "
                f"{len(loaded.event.recipients)} recipients, {deliveries} deliveries",
                markup=False,
            )
    failed = sum(1 for _, problems in results if problems)
    out.print(f"{len(results)} event files checked, {failed} with problems", markup=False)
    return EXIT_PROBLEMS if failed else EXIT_OK


@main.command()
@config_option
@click.argument("event_id")
@click.argument("mail_name")
@click.option("--recipient", "address", help="Whose mail to render (default: one per language).")
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
    config_path: Path | None, event_id: str, mail_name: str, address: str | None, out_dir: Path
) -> int:
    """Render what a recipient would get, as .eml (and .html), without sending."""
    settings = settings_from(config_path)
    written = write_previews(
        settings, event_id, mail_name, address=address, out_dir=out_dir, now=SystemClock().now()
    )
    for path in written:
        out.print(str(path), markup=False)
    return EXIT_OK


@main.command()
@config_option
@reports_errors
def run(config_path: Path | None) -> int:
    """Run the service in the foreground."""
    settings = settings_from(config_path)
    table = Table("event", "mail", "due", "expires", "recipients", title="Schedule")
    problems = 0
    for loaded in load_events(settings):
        if loaded.event is None:
            problems += 1
            err.print(str(loaded.error), markup=False)
            continue
        for mail in loaded.event.mails:
            table.add_row(
                loaded.id,
                mail.name,
                mail.due.isoformat(),
                mail.expires.isoformat(),
                str(len(loaded.event.recipients_of(mail))),
            )
    out.print(table)
    err.print("The delivery engine is not built yet: nothing is sent.", markup=False)
    return EXIT_PROBLEMS if problems else EXIT_OK
