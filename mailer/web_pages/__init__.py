"""The organisers' read-only pages (SPEC §12), served by web.py: `routes` (the handlers),
`views` (what each page shows), `preview` (a mail taken apart), `words` (Swedish and
English), and the Jinja2 templates in templates/, shipped inside the package."""

from mailer.web_pages.routes import add_pages

__all__ = ["add_pages"]
