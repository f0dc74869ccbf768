"""Throwaway mailer projects for the benchmarks: config, event folders, CSVs, a PDF.

Everything is written under a temporary folder; the templates are the repository's own, so
the service renders what it renders in production.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
SENDER = "bench@example.org"
# A report as organisers attach it (issue #8): compressed PDF content is close to random.
PDF_BYTES = 200 * 1024

CONFIG = """\
[paths]
schedules = "schedules"
templates = "{templates}"
database = "var/mailer.sqlite3"

[sender]
from = "{sender}"
from_name = "Samhällskontraktet"

[transport]
kind = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
timeout = "30s"

[sending]
connections = {connections}
max_per_minute = 0
"""

EVENT = '''\
title = "Seminarium {number}: sociala investeringar och skolfrånvaro"
starts = {starts}
ends = {ends}
location = "Regionens hus, Göteborg"
organiser = {{ name = "Västra Götalandsregionen", email = "sociala-investeringar@example.org" }}
description = """
Sedan 2015 har regionen arbetat med sociala investeringar för att stödja barn och unga till \
fullföljda studier. Under våren har sex investeringar som motverkar skolfrånvaro utvärderats.

Seminariet vänder sig till dig som är intresserad av frågan om skolfrånvaro.
"""

[[program]]
at = "10:00"
title = "Inledning"
speaker = "Shirin Bartholdsson"

[[program]]
at = "10:10"
title = "Resultatpresentation"

[[program]]
at = "11:45"
title = "Avslutning"

[recipients]
file = "people.csv"

[[mail]]
name = "{mail}"
send_at = {due}
to = ["all"]
{attach}'''


def toml_time(instant: datetime) -> str:
    """A TOML offset datetime in UTC, to the microsecond: due times are exact instants."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_project(root: Path, *, port: int, connections: int = 4) -> Path:
    """config.toml (SMTP to the sink, no rate limit) and an empty schedules folder."""
    (root / "schedules").mkdir(parents=True, exist_ok=True)
    config = root / "config.toml"
    config.write_text(
        CONFIG.format(templates=TEMPLATES, sender=SENDER, port=port, connections=connections),
        encoding="utf-8",
    )
    return config


def people(prefix: str, count: int) -> list[tuple[str, str]]:
    """(address, name) pairs; the prefix makes addresses unique across events."""
    return [(f"{prefix}-{i:05d}@example.org", f"Åsa Öberg {i}") for i in range(count)]


def write_event(
    root: Path,
    name: str,
    *,
    due: datetime,
    recipients: list[tuple[str, str]],
    mail: str = "invitation",
    pdf: bytes | None = None,
    starts: datetime | None = None,
) -> Path:
    """schedules/<name>/event.toml + people.csv (+ report.pdf): one mail, to everyone."""
    folder = root / "schedules" / name
    folder.mkdir(parents=True, exist_ok=True)
    starts = starts or due + timedelta(days=30)
    rows = "".join(f"{address},{person}\n" for address, person in recipients)
    (folder / "people.csv").write_text("email,name\n" + rows, encoding="utf-8")
    attach = ""
    if pdf is not None:
        (folder / "report.pdf").write_bytes(pdf)
        attach = 'attach = ["report.pdf"]\n'
    source = folder / "event.toml"
    source.write_text(
        EVENT.format(
            number=name,
            starts=toml_time(starts),
            ends=toml_time(starts + timedelta(hours=2)),
            mail=mail,
            due=toml_time(due),
            attach=attach,
        ),
        encoding="utf-8",
    )
    return source


def make_pdf(size: int = PDF_BYTES, *, seed: int = 8) -> bytes:
    """`size` bytes that look like a PDF with compressed streams: a header, then noise."""
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    return head + random.Random(seed).randbytes(size - len(head))


def now() -> datetime:
    return datetime.now(UTC)
