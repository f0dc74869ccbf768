"""The pages' words in Swedish and English, and which of the two a browser asks for.

Two languages and a few dozen phrases: a dictionary here reads better and checks more
(a missing translation fails a test) than gettext catalogues compiled at build time. Babel
(kept for the templates' dates) chooses the language from `Accept-Language`.
"""

from __future__ import annotations

from babel import negotiate_locale

LANGUAGES = ("sv", "en")

WORDS: dict[str, tuple[str, str]] = {  # key: (Swedish, English)
    "events": ("Evenemang", "Events"),
    "event": ("Evenemang", "Event"),
    "title": ("Titel", "Title"),
    "file": ("Fil", "File"),
    "next_due": ("Nästa utskick", "Next mail due"),
    "nothing_due": ("inget väntar", "nothing waiting"),
    "counts": ("Antal per läge", "Counts per state"),
    "error": ("Fel i filen", "Error in the file"),
    "error_kept": (
        "Filen har fel; den senaste giltiga versionen gäller tills felet är rättat.",
        "The file has an error; its last valid version stays in force until it is fixed.",
    ),
    "never_valid": (
        "Filen har aldrig varit giltig: inga utskick är planerade.",
        "The file has never been valid: no mail is planned.",
    ),
    "removed": (
        "Filen är borttagen; det som inte gått ut är avbrutet.",
        "The file is removed; what had not gone out is cancelled.",
    ),
    "no_events": ("Inga evenemang än.", "No events yet."),
    "mails": ("Utskick", "Mails"),
    "mail": ("Utskick", "Mail"),
    "due": ("Skickas", "Due"),
    "expires": ("Sista tid", "Expires"),
    "groups": ("Grupper", "Groups"),
    "recipients": ("Mottagare", "Recipients"),
    "recipient": ("Mottagare", "Recipient"),
    "name": ("Namn", "Name"),
    "state": ("Läge", "State"),
    "attempts": ("Försök", "Attempts"),
    "last_reply": ("Senaste svar", "Last reply"),
    "sent_at": ("Skickat", "Sent at"),
    "problem": ("Senaste problem", "Latest problem"),
    "no_longer_planned": ("inte längre planerat", "no longer planned"),
    "all": ("alla", "all"),
    "preview": ("Förhandsvisning", "Preview"),
    "show": ("Visa", "Show"),
    "preview_as": ("Så här ser det ut för", "As it looks for"),
    "html_part": ("HTML-delen", "The HTML part"),
    "text_part": ("Textdelen", "The text part"),
    "headers": ("Brevhuvud", "Headers"),
    "attachments": ("Bilagor", "Attachments"),
    "no_attachments": ("inga bilagor", "no attachments"),
    "no_html": ("Brevet har ingen HTML-del.", "The mail has no HTML part."),
    "cannot_compose": ("Brevet kan inte skapas", "The mail cannot be made"),
    "timeline": ("Tidslinje", "Timeline"),
    "timeline_intro": (
        "Varje utskick i tidsordning, som `mailer rehearse` spelar upp det, med läget nu.",
        "Each mail in time order, as `mailer rehearse` plays it, with where it stands now.",
    ),
    "languages": ("Språk", "Languages"),
    "nobody": ("ingen än", "nobody yet"),
    "times_in": ("Tider i", "Times in"),
    "not_found": ("Finns inte", "Not found"),
    "people_hidden": (
        "Mottagarnas adresser visas bara bakom lösenord eller på den här datorn.",
        "Recipients' addresses are shown only behind the password or on this machine.",
    ),
    "read_only": (
        "Sidan visar bara; den ändrar ingenting.",
        "This page only shows; it changes nothing.",
    ),
    # The delivery states (mailer.delivery.DeliveryState)
    "scheduled": ("planerat", "scheduled"),
    "sending": ("skickas nu", "being sent"),
    "sent": ("skickat", "sent"),
    "retrying": ("försöker igen", "retrying"),
    "failed": ("misslyckat", "failed"),
    "cancelled": ("avbrutet", "cancelled"),
    "expired": ("för sent", "expired"),
    "bounced": ("studsat", "bounced"),
}


def choose_language(accept_language: str, *, default: str) -> str:
    """Swedish or English: the first the browser accepts (by its q-values), else `default` if it is
    one of them, else Swedish."""
    wanted = []
    for order, item in enumerate(accept_language.split(",")):
        tag, _, parameters = item.strip().partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag.strip() and quality > 0:
            wanted.append((-quality, order, tag.strip()))
    chosen = negotiate_locale([tag for _, _, tag in sorted(wanted)], LANGUAGES, sep="-")
    if chosen is not None:
        return str(chosen)
    return default if default in LANGUAGES else LANGUAGES[0]


def words_in(language: str) -> dict[str, str]:
    """Every phrase in `language` ("sv" or "en")."""
    index = LANGUAGES.index(language)
    return {key: pair[index] for key, pair in WORDS.items()}
