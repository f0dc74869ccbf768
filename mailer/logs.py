"""How the service's log lines look on stderr: text or JSON, with times in the events' zone."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from zoneinfo import ZoneInfo


def configure_logging(log_format: str, *, zone: ZoneInfo) -> None:
    """Log to stderr (systemd's journal and Docker collect it), with times in `zone`, the
    one `status` shows, offset included: a log line and a status row read the same clock
    whatever the machine's own zone (a container's is often UTC)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(zone)
        if log_format == "json"
        else TextFormatter(zone, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for chatty in ("apscheduler", "watchfiles"):  # their INFO lines are not the operator's news
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # psycopg's pool warns at each failed reconnect, several a second while the database
    # server is down: the service says that once itself (store_trouble.py).
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class TextFormatter(logging.Formatter):
    """Times as `2026-12-02 09:23:05+01:00`: local to the events, with the UTC offset."""

    def __init__(self, zone: ZoneInfo, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.when(record).isoformat(sep=" ", timespec="seconds")

    def when(self, record: logging.LogRecord) -> datetime:
        return datetime.fromtimestamp(record.created, self.zone)


class JsonFormatter(TextFormatter):
    """One object a line; `time` in ISO 8601 with milliseconds and the offset."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.when(record).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:  # a bug's traceback, kept for the operator as in text logs
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
