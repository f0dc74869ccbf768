"""pydantic's validation errors in config.toml's own words: file, key, what was expected."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from mailer.config_values import quote
from mailer.errors import ConfigError


def config_problem(
    error: ErrorDetails, source: str, *, tables: dict[tuple[str, ...], type[BaseModel]]
) -> ConfigError:
    """One pydantic error as `config.toml: transport.port: must be 1-65535, got 70000`."""
    loc = [str(part) for part in error["loc"]]
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    table = tuple(loc[:-1])
    if loc[:1] == ["transport"] and len(loc) > 1 and loc[1] in ("smtp", "maildir"):
        del loc[1]  # the union tag is pydantic's, not a key the user wrote
    if kind == "union_tag_invalid":
        loc, value = [*loc, "kind"], value.get("kind")
    got = None if isinstance(value, dict) else value
    message = (
        _message(kind, quote(value), ctx, known=_known(tables.get(table)), top=not table)
        or error["msg"]
    )
    return ConfigError(message, source=source, key=".".join(loc) or None, got=got)


def _known(model: type[BaseModel] | None) -> str:
    """The keys a table takes, as written in the file (`from`, not `from_`)."""
    fields = model.model_fields.items() if model else ()
    return ", ".join(f.alias or name for name, f in fields if not f.exclude)


def _message(kind: str, shown: str, ctx: dict[str, Any], *, known: str, top: bool) -> str | None:
    """A readable message for the error types a config file runs into; None for the rest."""
    match kind:
        case "missing":
            return "required"
        case "extra_forbidden":
            return f"unknown {'section' if top else 'key'} (known: {known})"
        case "int_parsing" | "int_type" | "int_from_float":
            return f"expected a whole number, got {shown}"
        case "bool_parsing" | "bool_type":
            return f"expected true or false, got {shown}"
        case "string_type" | "path_type":
            return f"expected a string, got {shown}"
        case "string_too_short":
            return "must not be empty"
        case "literal_error" | "union_tag_invalid":
            choices = re.findall(r"'([^']*)'", ctx.get("expected") or ctx["expected_tags"])
            return f"expected one of {', '.join(map(quote, choices))}, got {shown}"
        case "greater_than_equal":
            return f"must be at least {ctx['ge']}, got {shown}"
        case "model_type" | "dict_type" | "union_tag_not_found" | "model_attributes_type":
            return f"expected a table, got {shown}"
        case "value_error":
            return str(ctx["error"])
    return None
