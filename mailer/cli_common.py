"""What every `mailer` command shares: the `-c` option (before the command or after it), the
settings it loads, the schedules folder it checks, and the exit code a `MailerError` becomes.
Apart from the commands (cli_organiser.py, cli_operator.py), which each take these the same way.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

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
