"""TOML text -> a table, or an error naming the line; keys nested too deeply refused first."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from mailer import slips
from mailer.errors import InputError


def load_toml(text: str, *, source: Path) -> dict[str, Any]:
    """TOML text -> a table, or an InputError that points at the line."""
    check_key_depth(text, source=source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        slip = slips.explain_toml_error(text, str(exc))
        if slip is None:
            raise InputError(f"not valid TOML: {exc}", source=source) from exc
        line, key, advice = slip
        where = f"line {line}: {key}" if key else f"line {line}"
        raise InputError(advice, source=source, key=where) from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table: [[[[…]]]]
        message = "not valid TOML: arrays or tables nested too deeply"
        raise InputError(message, source=source) from exc


# tomllib's memory grows with the square of a dotted key's length: `a.a.a…a = 1` 30,000 levels
# deep (a 60 KB line) took 3.5 GB in 11 s. Event files nest a few levels; 32 is generous.
MAX_KEY_DEPTH = 32
# A key is one line; once strings are masked, its segments are bare words or placeholders.
_DEEP = re.compile(rf"[\w-]+(?:[ \t]*\.[ \t]*[\w-]+){{{MAX_KEY_DEPTH},}}")
# Strings and comments, which may hold dots that are no key's.
_QUOTED = re.compile(
    r'"""(?:[^\\"]|\\[\s\S]|"(?!""))*"{3,5}'  # multi-line basic, escapes and all
    r"|'''[\s\S]*?'{3,5}"  # multi-line literal
    r'|"(?:[^"\\\n]|\\.)*"'  # basic
    r"|'[^'\n]*'"  # literal
    r"|#[^\n]*"  # comment
)


def check_key_depth(text: str, *, source: Path) -> None:
    """Refuse a key nested deeper than MAX_KEY_DEPTH (dotted keys, table headers) before
    tomllib sees it, naming its line: a scan linear in the text, ~15 ms a MB when no line
    holds that many dots (tomllib itself takes ~350 ms a MB)."""
    if all(line.count(".") < MAX_KEY_DEPTH for line in text.split("\n")):
        return
    masked = _QUOTED.sub(_placeholder, text)
    found = _DEEP.search(masked)
    if found is None:  # the dots were inside strings or comments
        return
    line = masked.count("\n", 0, found.start()) + 1
    depth = found.group().count(".") + 1
    raise InputError(
        f"a key nested {depth} levels deep; at most {MAX_KEY_DEPTH} are allowed",
        source=source,
        key=f"line {line}",
    )


def _placeholder(match: re.Match[str]) -> str:
    """A quoted key stays one key segment (`s`), a comment goes; line breaks stay for counting."""
    token = match.group()
    return ("" if token.startswith("#") else "s") + "\n" * token.count("\n")
