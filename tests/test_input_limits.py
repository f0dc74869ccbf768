"""Input that costs the machine or leaks through a side door (issue #11 items 4, 7, 8, 10).

Deeply dotted keys (memory), a watcher that fails, a single-file event reaching into other
events' folders, hard links, bare CR and NUL in texts, header lines over 998 octets; all
on real files, real links and real processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.events import EventDefaults, Recipient
from mailer.message import Sender, build_message, parse_message
from mailer.outbox import Outbox
from mailer.render import Rendered, Renderer
from mailer.sources import load_event
from mailer.watcher import watch
from tests.project import REPO
from tests.test_message import ANNA, MAIL, RENDERED
from tests.test_message import EVENT as MESSAGE_EVENT

pytestmark = pytest.mark.timeout(60)

DEFAULTS = EventDefaults("en", ZoneInfo("Europe/Stockholm"), timedelta(days=1))
NOW = datetime(2027, 5, 1, 12, tzinfo=UTC)
SENDER = Sender(address="info@example.org", name="Info", message_id_domain="example.org")
EVENT = """\
title = "Seminar"
starts = 2027-06-16T09:00:00
{extra}

[recipients]
{recipients}

[[mail]]
name = "invitation"
send_at = "start - 21d at 09:00"
{mail}
"""
ANNA_TOML = '[[recipients.people]]\nemail = "anna@example.org"\nname = "Anna"\n'


def event_text(*, extra: str = "", recipients: str = ANNA_TOML, mail: str = "") -> str:
    return EVENT.format(extra=extra, recipients=recipients, mail=mail)


def error_of(source: Path) -> str:
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.event is None and loaded.error is not None
    return str(loaded.error)


# -- 4. deeply dotted keys ----------------------------------------------------------------

# Runs load_event in a child under a 1 GiB address-space cap: before the fix the 30,000-level
# key took gigabytes (a MemoryError here) or seconds; now it is refused by a scan.
CHILD = """
import resource, sys, time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from mailer.events import EventDefaults
from mailer.sources import load_event
defaults = EventDefaults("en", ZoneInfo("Europe/Stockholm"), timedelta(days=1))
started = time.monotonic()
loaded = load_event(Path(sys.argv[1]), defaults=defaults)
took = time.monotonic() - started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child of a big
# test process would report the parent's peak.
status = Path("/proc/self/status").read_text()
peak_kb = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
print(f"{took:.3f} {peak_kb}")
print(loaded.error)
"""


@pytest.mark.parametrize(
    ("label", "line"),
    [
        ("dotted key", "a" + ".a" * 29_999 + " = 1"),
        ("quoted segments", '"a"' + '."a"' * 29_999 + " = 1"),
        ("table header", "[" + "a." * 29_999 + "a]"),
        ("array of tables", "[[" + "a ." * 29_999 + " a]]"),
        ("inline table", "x = { " + "a." * 29_999 + "a = 1 }"),
    ],
)
def test_a_key_nested_30000_levels_deep_is_refused_quickly_in_bounded_memory(
    tmp_path: Path, label: str, line: str
):
    source = tmp_path / "schedules" / "deep.toml"
    source.parent.mkdir()
    source.write_text(f'title = "x"\n# a comment\n{line}\n', encoding="utf-8")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(source)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    timing, error = child.stdout.split("\n", 1)
    took_s, peak_kb = float(timing.split()[0]), int(timing.split()[1])
    assert error.strip() == (
        f"{source}: line 3: a key nested 30000 levels deep; at most 32 are allowed"
    ), label
    assert took_s < 1.0, (label, took_s)
    assert peak_kb < 150_000, (label, peak_kb)  # the interpreter and imports: ~60 MB


@pytest.mark.parametrize(
    "text",
    [
        # Dots where they are not keys: in strings, comments, floats, dates, and 32 levels.
        'title = "' + "a." * 100 + '"\n# ' + "b." * 100 + "\nx = [" + "1.5, " * 100 + "]\n",
        'description = """\n' + "c." * 100 + " = 1\n" + '"""\n' + "y = 2027-06-16T09:00:00.5\n",
        "k = '" + "d." * 100 + "'\n" + ".".join(["e"] * 32) + " = 1\n",
    ],
)
def test_dots_in_strings_comments_and_numbers_and_32_levels_are_fine(tmp_path: Path, text: str):
    source = tmp_path / "ok.toml"
    source.write_text(text, encoding="utf-8")
    assert "levels deep" not in (str(load_event(source, defaults=DEFAULTS).error))


async def eventually(check, *, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_a_watcher_whose_handler_fails_logs_once_restarts_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="mailer")
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    seen: list[set[str]] = []
    failures = 0

    async def on_change(sources: set[Path]) -> None:
        nonlocal failures
        if failures < 3:  # the same fault three times: one log line
            failures += 1
            raise OSError(28, "No space left on device")
        seen.append({s.name for s in sources})

    stop = asyncio.Event()
    task = asyncio.create_task(watch(schedules, on_change, stop=stop, pause_s=0.05))
    try:
        await asyncio.sleep(0.3)
        (schedules / "a.toml").write_text("x")
        await eventually(lambda: {"a.toml"} in seen)  # the failed batch is tried again
        (schedules / "b.toml").write_text("x")
        await eventually(lambda: any("b.toml" in s for s in seen))
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    lines = [r.getMessage() for r in caplog.records if r.name == "mailer"]
    assert len([line for line in lines if "No space left on device" in line]) == 1, lines
    assert lines[-1].endswith("works again"), lines


async def test_a_watcher_survives_its_folder_being_removed_and_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="mailer")
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    seen: list[str] = []

    async def on_change(sources: set[Path]) -> None:
        seen.extend(s.name for s in sources)

    stop = asyncio.Event()
    task = asyncio.create_task(watch(schedules, on_change, stop=stop, pause_s=0.05))
    try:
        await asyncio.sleep(0.3)
        (schedules / "a.toml").write_text("x")
        await eventually(lambda: "a.toml" in seen)
        shutil.rmtree(schedules)  # restored from a backup, say
        await asyncio.sleep(0.5)
        schedules.mkdir()
        await asyncio.sleep(0.5)
        (schedules / "b.toml").write_text("x")
        await eventually(lambda: "b.toml" in seen)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    lines = [r.getMessage() for r in caplog.records if r.name == "mailer"]
    assert any("was removed or replaced" in line for line in lines), lines
    assert lines[-1].endswith("works again"), lines


# -- 7. a single-file event's files; hard links -------------------------------------------


@pytest.mark.parametrize(
    ("key", "where", "target"),
    [
        ("recipients", "recipients.file", "victim/people.csv"),
        ("attach", 'mail[0] "invitation".attach', "victim/event.toml"),
        ("attach", 'mail[0] "invitation".attach', "notes/agenda.pdf"),
    ],
)
def test_a_single_file_event_cannot_reach_into_a_subfolder(
    tmp_path: Path, key: str, where: str, target: str
):
    schedules = tmp_path / "schedules"
    victim = schedules / "victim"
    victim.mkdir(parents=True)
    (victim / "event.toml").write_text(event_text())
    (victim / "people.csv").write_text("email\nsecret@example.org\n")
    (schedules / "notes").mkdir()
    (schedules / "notes" / "agenda.pdf").write_bytes(b"%PDF-1.4")
    source = schedules / "x.toml"
    if key == "recipients":
        source.write_text(event_text(recipients=f'file = "{target}"'))
    else:
        source.write_text(event_text(mail=f'attach = ["{target}"]'))
    assert error_of(source) == (
        f"{source}: {where}: {target!r} is in a subfolder; a single-file event's files lie "
        "beside it in the schedules folder (give the event a folder of its own for more)"
    )


def test_a_single_file_event_may_use_files_beside_it_but_not_links_into_a_subfolder(
    tmp_path: Path,
):
    schedules = tmp_path / "schedules"
    (schedules / "victim").mkdir(parents=True)
    (schedules / "victim" / "secret.pdf").write_bytes(b"secret")
    (schedules / "agenda.pdf").write_bytes(b"%PDF-1.4")
    source = schedules / "x.toml"
    source.write_text(event_text(mail='attach = ["agenda.pdf"]'))
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.error is None, loaded.error
    (schedules / "report.pdf").symlink_to(schedules / "victim" / "secret.pdf")
    source.write_text(event_text(mail='attach = ["report.pdf"]'))
    assert error_of(source) == (
        f'{source}: mail[0] "invitation".attach: report.pdf leads into a subfolder (a link?); '
        "a single-file event's files lie beside it in the schedules folder"
    )


@pytest.mark.parametrize(
    ("key", "where"), [("attach", 'mail[0] "invitation".attach'), ("csv", "recipients.file")]
)
def test_a_hard_link_is_refused(tmp_path: Path, key: str, where: str):
    secret = tmp_path / "passwd"
    secret.write_text("email\nroot@example.org\n")
    folder = tmp_path / "schedules" / "seminar"
    folder.mkdir(parents=True)
    os.link(secret, folder / "report.pdf")
    source = folder / "event.toml"
    if key == "attach":
        source.write_text(event_text(mail='attach = ["report.pdf"]'))
    else:
        source.write_text(event_text(recipients='file = "report.pdf"'))
    assert error_of(source) == (
        f"{source}: {where}: report.pdf has other names (hard links) on this machine; "
        "copy the file into the event's folder instead"
    )


# -- 8. bare CR and NUL -------------------------------------------------------------------

CR_TEMPLATE = """\
{% block subject %}Hello{% endblock %}
{{ event.description }}
{% for item in event.program %}{{ item.title }} / {{ item.speaker }}
{% endfor %}
{{ event.note }}
{{ recipient.note }}
THE END
"""


def test_bare_cr_anywhere_in_the_texts_becomes_crlf_on_the_wire(tmp_path: Path):
    templates = tmp_path / "templates" / "en"
    templates.mkdir(parents=True)
    (templates / "invitation.txt.j2").write_text(CR_TEMPLATE)
    (templates / "invitation.html.j2").write_text(CR_TEMPLATE.replace("THE END", "<p>THE END</p>"))
    folder = tmp_path / "schedules" / "seminar"
    folder.mkdir(parents=True)
    (folder / "people.csv").write_bytes(
        b'email,note\r\nanna@example.org,"one\rtwo\r\r.\rthree"\r\n'
    )
    extra = textwrap.dedent(
        """\
        description = "first\\rsecond\\r\\nthird\\r.\\r\\n"
        note = "free\\rkey\\r"
        [[program]]
        at = 2027-06-16T09:00:00
        title = "talk\\rone"
        speaker = "Bo\\r\\r"
        """
    )
    source = folder / "event.toml"
    source.write_text(event_text(extra=extra, recipients='file = "people.csv"'))
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.event is not None, loaded.error
    outbox = Outbox(Renderer(tmp_path / "templates", default_language="en"), SENDER)
    event = loaded.event
    raw = outbox.compose(event, event.mails[0], event.recipients[0], now=NOW)
    assert b"\x00" not in raw
    lines = raw.split(b"\r\n")
    assert not [line for line in lines if b"\r" in line or b"\n" in line]
    text = parse_message(raw).get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "first\nsecond\nthird\n." in text and "one\ntwo\n\n.\nthree" in text
    assert "talk\none" in text and "free\nkey" in text


def test_bare_cr_left_by_a_template_is_still_crlf_on_the_wire():
    rendered = Rendered(RENDERED.subject, "a\rb\r\n.\r", "<p>a\r.\r</p>", "en")
    raw = build_message(MESSAGE_EVENT, MAIL, ANNA, rendered, sender=SENDER, now=NOW)
    assert not [line for line in raw.split(b"\r\n") if b"\r" in line or b"\n" in line]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('description = "a\\u0000b"', "description"),
        ('note = "a\\u0000b"', "note"),
        ('notes = ["ok", { deep = "a\\u0000b" }]', "notes[1].deep"),
        ('[[program]]\ntitle = "a\\u0000b"', "program[0].title"),
    ],
)
def test_nul_in_a_text_is_refused_naming_the_key(tmp_path: Path, extra: str, key: str):
    source = tmp_path / "schedules" / "x.toml"
    source.parent.mkdir(parents=True)
    source.write_text(event_text(extra=extra))
    assert error_of(source).startswith(f"{source}: {key}: control characters")


# -- 10. header lines over 998 octets -----------------------------------------------------


@pytest.mark.parametrize("char", ["x", "å", "🎉"])
def test_a_subject_of_1000_characters_without_spaces_is_folded(char: str):
    subject = "Re:" + char * 1000
    name = "N" + char * 1200
    rendered = Rendered(subject, "text\n", None, "en")
    recipient = Recipient("anna@example.org", name)
    sender = Sender(address="info@example.org", name="S" + char * 1100)
    raw = build_message(MESSAGE_EVENT, MAIL, recipient, rendered, sender=sender, now=NOW)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    message = message_from_bytes(raw, policy=policy.default)
    assert message["Subject"] == subject
    # RFC 2047 decoding gives the names back exactly; Python's address parser (policy.default)
    # puts a space between adjacent encoded-words in a phrase, which RFC 2047 §6.2 says to drop.
    parsed = message_from_bytes(raw, policy=policy.compat32)
    raw_to, raw_from = str(parsed["To"]), str(parsed["From"])
    assert str(make_header(decode_header(raw_to))) == f"{name} <anna@example.org>"
    assert message["To"].addresses[0].display_name.replace(" ", "") == name
    assert message["To"].addresses[0].addr_spec == "anna@example.org"
    assert str(make_header(decode_header(raw_from))) == f"{sender.name} <info@example.org>"


def test_the_folded_subject_stays_cheap():
    rendered = Rendered("x" * 1000, "text\n", None, "en")
    build_message(MESSAGE_EVENT, MAIL, ANNA, rendered, sender=SENDER, now=NOW)
    started = time.perf_counter()
    for _ in range(200):
        build_message(MESSAGE_EVENT, MAIL, ANNA, rendered, sender=SENDER, now=NOW)
    assert (time.perf_counter() - started) / 200 < 0.002  # cached: the fold is done once
