"""The Jinja sandbox templates run in: its filters, and a loader that never leaves templates/."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path

from jinja2 import BaseLoader, Environment, StrictUndefined, select_autoescape
from jinja2.exceptions import TemplateError, TemplateNotFound
from jinja2.loaders import split_template_path

from mailer.dates import STYLES
from mailer.mail_macros import MailSandbox


class OutsideTemplates(TemplateError):
    """A template file that is a link (or in a linked folder) leading out of templates/."""


def new_sandbox(
    folders: list[Path], *, root: Path, show: Callable[[Path], str], language: str
) -> MailSandbox:
    """An environment loading from `folders` in order, with the filters of `language` (a
    language without a DateStyle is formatted in English)."""
    env = MailSandbox(
        loader=_InsideLoader(folders, root=root, show=show),
        undefined=StrictUndefined,
        autoescape=select_autoescape(("html.j2", "html"), default_for_string=False),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    style = STYLES.get(language.split("-")[0], STYLES["en"])
    env.filters.update(
        date=style.date,
        time=style.time,
        datetime=style.datetime,
        span=style.span,
        shortdate=style.shortdate,
        paragraphs=paragraphs,
    )
    return env


def paragraphs(text: str) -> list[str]:
    """Paragraphs of free text split on blank lines, as an organiser writes a description."""
    return [part.strip() for part in re.split(r"\n[ \t]*\n", str(text)) if part.strip()]


def loader(env: Environment) -> BaseLoader:
    """The loader every sandbox has."""
    assert env.loader is not None
    return env.loader


def located(env: Environment, template: str) -> tuple[Path, Path]:
    """The file `template` loads in `env`, as named and as resolved (see `_InsideLoader`)."""
    assert isinstance(env.loader, _InsideLoader)
    return env.loader.locate(template)


def identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, modification time) of the file as named, or None if it is gone."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns


class _InsideLoader(BaseLoader):
    """Loads templates from folders under `root`, never through a link that leaves it: a
    template linked to /proc/self/environ would otherwise mail the service's secrets."""

    def __init__(self, folders: list[Path], *, root: Path, show: Callable[[Path], str]) -> None:
        self.folders = folders
        self.root = root
        self.show = show

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path, real = self.locate(template)
        seen = identity(real)
        text = real.read_text(encoding="utf-8")
        return text, str(path), functools.partial(_unchanged, path, seen)

    def locate(self, template: str) -> tuple[Path, Path]:
        """The file a template name loads, as named and as resolved, checked to be inside
        the templates folder; nothing read yet."""
        pieces = split_template_path(template)
        for folder in self.folders:
            path = Path(folder, *pieces)
            if not path.is_file():
                continue
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise OutsideTemplates(f"{self.show(path)} cannot be followed: {exc}") from exc
            if not real.is_relative_to(self.root):
                raise OutsideTemplates(
                    f"{self.show(path)} leads outside the templates folder (a link?): refused"
                )
            return path, real
        raise TemplateNotFound(template)


def _unchanged(path: Path, seen: tuple[int, int, int] | None) -> bool:
    """One stat per use: the file as named is still the one read (not edited, not pointed
    elsewhere); else it is loaded, and checked, again."""
    return identity(path) == seen
