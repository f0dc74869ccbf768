"""The commands an organiser runs on their event files: `check`, `preview`, `rehearse` and
`send` (also `send --test` to themselves). Each parses, loads settings, calls one function of
`commands.py` and prints (`printing.py`).

Like all commands, each imports what it needs when it runs (cli.py says why).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailer.cli_common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    config_option,
    reports_errors,
    schedules_of,
    settings_from,
)
from mailer.clock import SystemClock


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


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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
