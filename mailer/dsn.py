"""A message from the bounce mailbox -> the delivery it returns and what went wrong (pure).

Which delivery: the bounce is addressed to the delivery's own envelope sender
(`bounces+<token>@…`, keyring.py), which the receiving server writes into `Delivered-To`,
`X-Original-To` or `To`; a token that does not verify is a forgery (or a typo) and matches
nothing. What went wrong: an RFC 3464 report is read with the standard `email` package,
because it carries the status code ("5.1.1") and the remote server's diagnostic per
recipient, which flufl.bounce's detectors throw away (they answer only which addresses
failed). Anything else goes to flufl.bounce (GNU Mailman's detectors for the formats of
Exchange's old gateways, qmail, Gmail's plain-text notices, ...), which says whether the
failure is permanent or a delay: the status is then the class alone ("5.0.0", "4.0.0").
"""

from __future__ import annotations

import email
import email.message
import email.utils
import hashlib
import re
from dataclasses import dataclass

from flufl.bounce import all_failures

from mailer.keyring import Keyring

# The headers a receiving server writes the envelope recipient into (Postfix: Delivered-To
# and X-Original-To; Exim: Envelope-To; most DSNs also go To the envelope sender).
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_SMTP_CODE = re.compile(r"\b([245]\d\d)\b")
# A diagnostic is the remote server's words: enough to see why, not a whole transcript.
DIAGNOSTIC_CHARS = 300


@dataclass(frozen=True)
class Notice:
    """A bounce or delay notice for one of our deliveries."""

    notice: str  # the delivery and the notice's Message-ID (or hash): recorded once
    delivery: int
    status: str  # "5.1.1"; "5.0.0" or "4.0.0" when the notice gives no code
    reply: str  # status and diagnostic, as `mailer status` shows them
    code: int | None  # the remote server's SMTP code, if the diagnostic quotes one


@dataclass(frozen=True)
class Unmatched:
    """Not for one of our deliveries, or not a bounce: left in the mailbox as it is."""

    why: str


def read_notice(raw: bytes, *, keyring: Keyring, bounce_address: str) -> Notice | Unmatched:
    """What one message of the bounce mailbox says, if it is a bounce of ours."""
    message = email.message_from_bytes(raw)
    delivery = _delivery(message, keyring=keyring, bounce_address=bounce_address)
    if isinstance(delivery, Unmatched):
        return delivery
    found = _from_report(message) or _from_other_formats(message)
    if found is None:
        return Unmatched("not a bounce or delay notice (no failed recipient in it)")
    status, diagnostic = found
    reply = f"{status} {diagnostic}".strip()
    code = _SMTP_CODE.search(diagnostic)
    named = str(message.get("Message-ID", "")).strip() or hashlib.sha256(raw).hexdigest()
    return Notice(f"{delivery} {named}", delivery, status, reply, int(code[1]) if code else None)


def _delivery(
    message: email.message.Message, *, keyring: Keyring, bounce_address: str
) -> int | Unmatched:
    local, _, domain = bounce_address.lower().rpartition("@")
    headers = [str(v) for name in _RECIPIENT_HEADERS for v in message.get_all(name, [])]
    ours = [
        address
        for _, address in email.utils.getaddresses(headers)
        if address.lower().startswith(f"{local}+") and address.lower().endswith(f"@{domain}")
    ]
    for address in ours:
        delivery = keyring.delivery_of(address, bounce_address=bounce_address)
        if delivery is not None:
            return delivery
    if ours:
        return Unmatched(f"its token does not verify ({ours[0]}): forged or mistyped")
    return Unmatched(f"addressed to none of the bounce addresses {local}+…@{domain}")


def _from_report(message: email.message.Message) -> tuple[str, str] | None:
    """The first failed or delayed recipient of an RFC 3464 report: status, diagnostic."""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks[1:] if isinstance(blocks, list) else []:
            if not isinstance(block, email.message.Message):
                continue
            action = str(block.get("Action", "")).strip().lower()
            if not action.startswith(("failed", "delayed")):
                continue
            status = _STATUS.search(str(block.get("Status", "")))
            default = "4.0.0" if action.startswith("delayed") else "5.0.0"
            diagnostic = _words(str(block.get("Diagnostic-Code", "")))
            return (status[0] if status else default), diagnostic or f"({action})"
    return None


def _from_other_formats(message: email.message.Message) -> tuple[str, str] | None:
    """flufl.bounce's detectors: permanent or a delay, with the notice's subject as words."""
    temporary, permanent = all_failures(message)
    subject = _words(str(message.get("Subject", ""))) or "no subject"
    if permanent:
        return "5.0.0", f"{subject} (no status code in the notice)"
    if temporary:
        return "4.0.0", f"{subject} (no status code in the notice)"
    return None


def _words(text: str) -> str:
    """One line: "smtp; " and "X-Postfix; " type prefixes off, runs of space folded."""
    text = " ".join(text.split())
    text = re.sub(r"^[A-Za-z-]+;\s*", "", text)
    return text[:DIAGNOSTIC_CHARS]
