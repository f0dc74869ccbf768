"""An event's `[recipients]` table: its CSV file, the people listed inline, declared groups."""

from __future__ import annotations

from pathlib import Path

from mailer import slips
from mailer.errors import Collector
from mailer.mails import check_keys, inside
from mailer.recipients import Recipient, parse_csv, parse_people, unique

RECIPIENTS_KEYS = frozenset(("file", "people", "groups"))


def parse_recipients(
    table: object,
    *,
    source: Path,
    csv_text: str | None,
    mailed: set[str],
    flat: bool,
    problems: Collector,
) -> tuple[Recipient, ...]:
    """The `[recipients]` table (+ the text of its CSV) -> everyone, each once."""
    if not isinstance(table, dict):
        problems.add("recipients", "expected a table with `file` and/or [[recipients.people]]")
        return ()
    check_keys(table, RECIPIENTS_KEYS, prefix="recipients", problems=problems)
    found: list[tuple[str, Recipient]] = []
    if "file" in table:
        csv_path = inside(
            source.parent,
            table["file"],
            key="recipients.file",
            problems=problems,
            flat=flat,
        )
        if csv_path and csv_text is not None:
            csv_problems = Collector(csv_path)
            rows = parse_csv(csv_text, problems=csv_problems, label=csv_path.name)
            label = f"{csv_path.name} "
            slips.check_groups(rows, mailed=mailed, problems=csv_problems, label=label)
            problems.extend(csv_problems.problems)
            found += rows
    if "people" in table:
        people = parse_people(table["people"], problems=problems)
        slips.check_groups(people, mailed=mailed, problems=problems)
        found += people
    return unique(found, problems=problems)


def known_groups(
    table: object, recipients: tuple[Recipient, ...], *, problems: Collector
) -> set[str]:
    """Groups someone is in, plus those declared in `[recipients] groups` for mails to people
    who are not in them yet (nobody has `attended` before the event)."""
    declared = table.get("groups", []) if isinstance(table, dict) else []
    if not isinstance(declared, list) or not all(isinstance(g, str) for g in declared):
        problems.add("recipients.groups", 'expected a list of group names, like ["attended"]')
        declared = []
    return {"all", *declared}.union(*(r.groups for r in recipients))
