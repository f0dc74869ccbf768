"""Header lines as they go on the wire: encoded-words (RFC 2047) where needed, folded at 78."""

from __future__ import annotations

import functools
import re
from email import quoprimime
from email.charset import Charset
from email.header import Header
from email.utils import formataddr

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322's recommended line length; the hard limit is 998
_UTF8 = Charset("utf-8")
# Folding happens at spaces only: a run without one that cannot fit a line after `Subject: `
# goes as encoded-words instead, which may be split anywhere (a 1,000-character word made a
# 1,004-octet line, and servers answer `500 Line too long` past RFC 5322's 998).
_UNFOLDABLE = re.compile(rf"\S{{{MAX_LINE - len('Subject: ')},}}")
# A word that stands in a display name as itself (RFC 5322 atext); `=?` would be decoded.
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_ENCODED_WORD = 75  # RFC 2047's longest encoded-word


def unstructured(header: str, value: str) -> str:
    """`Header: value`, as RFC 2047 encoded-words when it is not plain ASCII, folded."""
    if value.isascii() and "=?" not in value and len(header) + 2 + len(value) <= MAX_LINE:
        return f"{header}: {value}"
    plain = value.isascii() and "=?" not in value and not _UNFOLDABLE.search(value)
    charset = "us-ascii" if plain else "utf-8"
    return f"{header}: {_folded(header, value, charset)}"


@functools.lru_cache(maxsize=1024)
def mailbox(header: str, name: str, address: str) -> str:
    """`Name <address>`: quoted as needed on one line, or encoded-words folded by us. Kept:
    From and Reply-To are the same in every message (~5 µs each for a non-ASCII name).

    A long display name is never left to a generic folder: Python 3.11's folds
    `"Andersson, Anna …"` without its quotes, which reads as two addresses (and a `:` as a
    group). A name holding `=?` is encoded too, so no client decodes it as an encoded-word.
    """
    if not name:
        return f"{header}: {address}"
    if (name + address).isascii() and "=?" not in name:  # formataddr refuses non-ASCII
        one_line = f"{header}: {formataddr((name, address))}"
        if len(one_line) <= MAX_LINE:
            return one_line
    words = _UTF8.header_encode(name)  # one encoded-word: enough for most names
    if len(header) + 2 + len(words) > MAX_LINE:
        words = _phrase(header, name)
    one_line = f"{header}: {words} <{address}>"
    if len(one_line.rsplit(CRLF, 1)[-1]) <= MAX_LINE:  # the address fits on the last line
        return one_line
    return f"{header}: {words}{CRLF} <{address}>"


def _phrase(header: str, name: str) -> str:
    """A display name too long for one encoded-word, folded after `Header: ` and split only
    between words: plain words stay as they are, the others become encoded-words.

    Where an encoded-word meets a plain word, every reader keeps the space between them. Two
    adjacent encoded-words are read differently: RFC 2047 readers (Outlook, Thunderbird)
    drop the space between them, Python's address parser keeps one (CPython gh-128110); so
    a name split inside a word read as "Län smansgården" there. The space between words goes
    inside an encoded-word, so a run of non-ASCII words too long for one reads exactly in
    RFC 2047 readers and with a doubled space in Python's; a single word longer than an
    encoded-word is split in it, and Python's parser shows a space there.
    """
    room = min(_ENCODED_WORD, MAX_LINE - len(header) - 2)
    words = name.split(" ")
    # An empty word is a doubled space, which only an encoded-word keeps: so are its neighbours.
    plain = [
        _ATOM.fullmatch(word) is not None
        and "=?" not in word
        and len(word) <= room
        and "" not in words[max(i - 1, 0) : i + 2]
        for i, word in enumerate(words)
    ]
    chunks: list[str] = []
    run: list[str] = []
    for word, is_plain in zip([*words, ""], [*plain, True], strict=True):
        if not is_plain:
            run.append(word)
            continue
        if run:
            chunks += _encoded_words(run, room)
            run = []
        if word:
            chunks.append(word)
    lines = [f"{header}:"]
    for chunk in chunks:
        if len(lines[-1]) + 1 + len(chunk) > MAX_LINE:
            lines.append("")
        lines[-1] += f" {chunk}"
    return CRLF.join(lines)[len(header) + 2 :]


def _encoded_words(words: list[str], room: int) -> list[str]:
    """`words` joined by spaces as encoded-words of at most `room` characters, each ending
    after a space; a word too long for one is split between its characters."""
    texts = [f"{word} " for word in words[:-1]] + [words[-1]]
    pieces = [""]
    for text in texts:
        for unit in [text] if _encoded_length(text) <= room else text:
            if _encoded_length(pieces[-1] + unit) > room:
                pieces.append("")
            pieces[-1] += unit
    return [_UTF8.header_encode(piece) for piece in pieces if piece]


def _encoded_length(text: str) -> int:
    """Characters in the encoded-word `header_encode` writes for `text`: `=?utf-8?b?...?=`
    or `=?utf-8?q?...?=`, whichever is shorter."""
    octets = text.encode()
    return 12 + min(4 * -(-len(octets) // 3), quoprimime.header_length(octets))


@functools.lru_cache(maxsize=1024)
def _folded(header: str, value: str, charset: str) -> str:
    """`value` encoded (as needed) and folded by email.header: ~0.3 ms a time, so kept for
    the subjects and senders that every recipient of a mail shares."""
    return Header(value, charset, header_name=header).encode(linesep=CRLF)
