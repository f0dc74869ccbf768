"""Template files: which folder and language hold a mail's templates, and their environments.

Templates: `templates/<lang>/<name>.{txt,html}.j2`, or language-neutral in `templates/`
(taken to be in the default language). The language is the recipient's, else the mail's,
the event's, the default: the first that has the template.
"""

from __future__ import annotations

import re
from pathlib import Path

from mailer.errors import InputError
from mailer.events import Event, Mail
from mailer.languages import chain, is_language_folder
from mailer.mail_macros import MailSandbox
from mailer.sandbox import new_sandbox

# The subject block is taken from the first kind that has one: the text one needs no unescaping.
KINDS = ("txt", "html")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


class TemplateFolder:
    """One templates folder: where each mail's templates are, one sandbox per language folder.

    Jinja caches compiled templates and recompiles a file that changed; which files exist
    is looked up for every mail, so an edited or added template works without a restart.
    """

    def __init__(self, templates_dir: Path, *, default_language: str) -> None:
        self._dir = Path(templates_dir)
        self._root = self._dir.resolve()
        self._default = (chain(default_language) or ["en"])[0]
        self._envs: dict[Path, MailSandbox] = {}

    @property
    def templates_dir(self) -> Path:
        return self._dir

    @property
    def default_language(self) -> str:
        return self._default

    def place(self, event: Event, mail: Mail, recipient_language: str | None) -> tuple[Path, str]:
        """(folder, language) of the first place in the language chain holding the template."""
        name, key = mail.template, f"{mail.key}.template"
        if not _TEMPLATE_NAME.fullmatch(name):
            raise InputError(f"invalid template name {name!r}", source=event.source, key=key)
        order = chain(recipient_language, mail.language, event.language, self._default)
        places = [(self._dir / language, language) for language in order]
        places.append((self._dir, self._default))
        for folder, language in places:
            if files_in(folder, name):
                return folder, language
        looked = ", ".join(self.show(folder) for folder, _ in places)
        raise InputError(
            f'no template "{name}" (looked for {name}.html.j2 / {name}.txt.j2 in {looked})',
            source=event.source,
            key=key,
        )

    def variants(self, name: str) -> list[tuple[Path, str]]:
        """Every language folder holding the template, and the root if it does: all may be used."""
        places = [(p, p.name) for p in sorted(self._dir.iterdir()) if is_language_folder(p.name)]
        places.append((self._dir, self._default))
        return [(folder, language) for folder, language in places if files_in(folder, name)]

    def languages(self) -> list[str]:
        """The languages there are templates in: the folders of templates/, and the default
        language if templates/ itself holds (language-neutral) templates."""
        try:
            found = {p.name for p in self._dir.iterdir() if is_language_folder(p.name)}
            found.update([self._default] if any(self._dir.glob("*.j2")) else [])
        except OSError:
            return []
        return sorted(found)

    def env(self, folder: Path, language: str) -> MailSandbox:
        """The environment of one folder; the root is searched second, so layouts may be shared."""
        env = self._envs.get(folder)
        if env is None:
            folders = list(dict.fromkeys([folder, self._dir]))
            env = new_sandbox(folders, root=self._root, show=self.show, language=language)
            self._envs[folder] = env
        return env

    def show(self, path: Path | str) -> str:
        """A path as the operator knows it: templates/sv/invitation.txt.j2."""
        try:
            return Path(path).relative_to(self._dir.parent).as_posix()
        except ValueError:
            return str(path)


def files_in(folder: Path, name: str) -> list[tuple[str, str]]:
    """(kind, file name) of the mail's templates present in `folder`."""
    files = [(kind, f"{name}.{kind}.j2") for kind in KINDS]
    return [(kind, file) for kind, file in files if (folder / file).is_file()]
