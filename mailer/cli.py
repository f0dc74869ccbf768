"""The `mailer` command line: the group and its commands, which live by whom they serve
(cli_organiser.py: check, preview, rehearse, send; cli_operator.py: run, status, retry,
purge, migrate; what they share: cli_common.py). Each command parses, loads settings, calls
one function of `commands.py`, prints (`printing.py`) and returns its exit code. The command
line alone exits.

A command imports what it needs when it runs: `mailer --help`, or `status` from a script,
should not wait a second for the whole service (templates, calendars, the web server) to
import. Only click and what is light are imported here.
"""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli_common import CONFIG_HELP
from mailer.cli_operator import migrate, purge, retry, run, status
from mailer.cli_organiser import check, preview, rehearse, send


@click.group()
@click.option(
    "-c", "--config", "config_path", type=click.Path(path_type=Path), default=None, help=CONFIG_HELP
)
@click.version_option(package_name="mailer", prog_name="mailer")
def main(config_path: Path | None) -> None:
    """Sends the timed emails around an event: invitations, reminders, reports, follow-ups."""


for command in (check, preview, run, status, send, retry, purge, rehearse, migrate):
    main.add_command(command)
