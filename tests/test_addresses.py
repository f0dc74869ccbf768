"""The fast path for plain addresses agrees with email-validator on everything it accepts."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.addresses import _PLAIN, InvalidAddress, normalize_address


def slow(value: str) -> str | None:
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.ascii_email or checked.normalized


@settings(max_examples=150, deadline=None)
@given(st.from_regex(_PLAIN, fullmatch=True))
def test_every_address_the_fast_path_accepts_email_validator_accepts_alike(value: str):
    assert_agree(value)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
    | st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=20), st.text(max_size=30))
)
def test_on_any_text_the_two_agree(value: str):
    assert_agree(value)


def assert_agree(value: str) -> None:
    try:
        fast = normalize_address(value)
    except InvalidAddress:
        assert slow(value) is None
    else:
        assert fast == slow(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Anna.Andersson@Example.ORG", "Anna.Andersson@example.org"),
        ("åsa@exempel.se", "åsa@exempel.se"),  # not plain: email-validator decides
        ("a@b.test", None),  # special-use domain
        ("a@localhost", None),
        ("a..b@example.org", None),
        ("a@123.456", None),  # numeric top-level domain
        ("FTP@0.A", "ftp@0.a"),  # RFC 2142 role mailbox: email-validator lower-cases it
        ("Postmaster@Example.org", "postmaster@example.org"),
    ],
)
def test_examples(value: str, expected: str | None):
    if expected is None:
        with pytest.raises(InvalidAddress):
            normalize_address(value)
    else:
        assert normalize_address(value) == expected
