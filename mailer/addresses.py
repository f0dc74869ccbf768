"""Email addresses: a strict fast path for the plain ASCII ones, email-validator for the rest.

email-validator spends ~150 µs on an address (most of it IDNA checks, character by
character): 30 s for the 200,000 recipients of 1,000 events. Almost every address is plain
ASCII `dot.atom@host.name`, which a regular expression settles in ~1.5 µs. Whatever that
expression does not accept in full (non-ASCII, quoted local parts, special-use or numeric
top-level domains, anything too long) goes to email-validator, which also writes the error
messages. tests/test_addresses.py checks that the two agree on everything the fast path
accepts.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

# RFC 5322 atext; RFC 1035 labels; a top-level domain that starts and ends with a letter.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@"
    rf"(?P<domain>(?:{_LABEL}\.)+(?P<tld>[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z])?))"
)
# Lengths from RFC 5321 §4.5.3.1 as email-validator applies them.
MAX_LOCAL = 64
MAX_ADDRESS = 254
# email-validator refuses addresses at these reserved names (RFC 6761 and friends).
_SPECIAL_USE = frozenset(("arpa", "invalid", "local", "localhost", "onion", "test"))
# Role mailboxes (RFC 2142: postmaster, abuse, ftp, ...) email-validator lower-cases.
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


class InvalidAddress(ValueError):
    """Why an address is not one, in email-validator's words."""


def normalize_address(value: str) -> str:
    """The address in normal form (domain lower-cased), or InvalidAddress. No DNS."""
    plain = _PLAIN.fullmatch(value)
    if plain and _is_ordinary(value, plain):
        domain = plain["domain"]
        # The string as read when already in normal form: 200,000 copies fewer.
        return value if domain.islower() else f"{plain['local']}@{domain.lower()}"
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc
    return checked.ascii_email or checked.normalized


def _is_ordinary(value: str, plain: re.Match[str]) -> bool:
    """Within the lengths, not at a reserved name, not a role mailbox. (The domain of an
    address within MAX_ADDRESS is within the 253 characters a domain may have.)"""
    local = plain["local"]
    return (
        len(value) <= MAX_ADDRESS
        and len(local) <= MAX_LOCAL
        and plain["tld"].lower() not in _SPECIAL_USE
        and local.lower() not in _ROLE_MAILBOXES
    )
