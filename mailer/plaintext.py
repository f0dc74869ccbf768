"""HTML mail body -> readable plain text, for templates that ship only an HTML version."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Tags that end a paragraph (blank line) or only a line; their content is kept.
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})
_LINES = frozenset({"div", "tr", "section", "header", "footer", "article", "hr"})
# Tags whose content a reader never sees in the HTML either.
_HIDDEN = frozenset({"head", "title", "style", "script"})
# Separates table cells; survives the whitespace collapse, becomes two spaces at the end.
_CELL = "\x00"


class _TextBuilder(HTMLParser):
    """Collects text with the breaks the HTML implies: paragraphs, lines, list items, cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._newlines = 2  # trailing line breaks so far: nested blocks must not stack them
        self._links: list[tuple[str, int]] = []  # (href, index in parts where the link text starts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
            self._newlines += 1
        elif tag == "li":
            self._break(1)
            self._write("- ")
        elif tag in ("td", "th"):
            self.parts.append(_CELL)
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.parts)))
        elif tag in _PARAGRAPHS or tag in _LINES:
            self._break(2 if tag in _PARAGRAPHS else 1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _PARAGRAPHS or tag in _LINES:
            self._break(2 if tag in _PARAGRAPHS else 1)
        elif tag == "a" and self._links:
            self._close_link(*self._links.pop())

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._write(re.sub(r"\s+", " ", data))

    def _write(self, text: str) -> None:
        self.parts.append(text)
        if text.strip():
            self._newlines = 0

    def _break(self, count: int) -> None:
        self.parts.append("\n" * max(0, count - self._newlines))
        self._newlines = max(count, self._newlines)

    def _close_link(self, href: str, start: int) -> None:
        """Show where a link goes, unless its text already says it (a bare URL or address)."""
        text = "".join(self.parts[start:]).strip()
        target = href.removeprefix("mailto:")
        if target and target != text and not target.startswith("#"):
            self._write(f" ({target})")


def html_to_text(html: str) -> str:
    """The text a reader sees in `html`, laid out in lines and paragraphs."""
    builder = _TextBuilder()
    builder.feed(html)
    builder.close()
    text = "\n".join(_tidy(line) for line in "".join(builder.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _tidy(line: str) -> str:
    """One space between words, two between table cells, none at the ends."""
    line = re.sub(r" +", " ", line).strip(" " + _CELL)
    return re.sub(f" *{_CELL}[ {_CELL}]*", "  ", line)
