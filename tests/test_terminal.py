"""What the CLI prints is the data as written, never instructions to the terminal (issue #11.9).

Titles, replies and file names come from organisers and servers: rich markup in them
(`[/bold]`, `[bold red]`), escape sequences and line breaks are shown, not obeyed, and an
address that is not a safe file name (`a/b@example.org`) still gets its preview.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import ManualClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.store import Store
from mailer.transports.smtp import SmtpTransport
from tests.project import EVENT, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import PASSWORD, SmtpServer
from tests.test_engine import INVITATION_DUE

pytestmark = pytest.mark.timeout(30)

# What a careless (or hostile) organiser writes as a title: a closing tag rich cannot match,
# and a style that would recolour the rest of the screen. (Control characters in a title are
# refused when the event is read.)
TITLE = "Seminarium [/bold] om [bold red]närvaro"
# A server's reply may carry an escape sequence too (this one clears the screen).
REPLY = "550 5.7.1 [/bold] refused [bold red]by policy \x1b[2J"
SHOWN_REPLY = "550 5.7.1 [/bold] refused [bold red]by policy \\x1b[2J"


def mailer(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.output


def assert_shown_as_data(output: str) -> None:
    """No traceback, no escape character, and the markup printed as written."""
    assert "Traceback" not in output and "Error" not in output
    assert "\x1b" not in output
    assert "[/bold]" in output and "[bold red]" in output


async def refused_once(root: Path, server: SmtpServer) -> None:
    """The engine plans the event and sends its one mail; the server refuses it with REPLY."""
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    transport = SmtpTransport(
        settings.transport,  # type: ignore[arg-type]
        connections=1,
        max_per_minute=0,
        tls_context=server.client_context(),
    )
    engine = Engine(settings, store=store, transport=transport, clock=ManualClock(INVITATION_DUE))
    server.faults.script = [REPLY]
    try:
        await engine.load_all()
        assert (await engine.step()).handled == 1
    finally:
        await transport.close()
        await store.close()


async def test_status_prints_markup_in_titles_and_replies_as_written(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)
    text = timed_event(INVITATION_DUE.isoformat(), people=1).replace(
        'title = "Seminarium"', f'title = "{TITLE}"'
    )
    write_event(tmp_path, "seminarium", text)
    config = make_project(tmp_path, transport=smtp_transport(smtp_server.port))
    await refused_once(tmp_path, smtp_server)

    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)  # load_settings takes it out
    code, overview = await asyncio.to_thread(mailer, "status", "-c", str(config))
    assert code == 0, overview
    assert_shown_as_data(overview)
    assert f"seminarium: {TITLE}" in overview

    monkeypatch.setenv("MAILER_SMTP_PASSWORD", PASSWORD)
    code, detail = await asyncio.to_thread(
        mailer, "status", "-c", str(config), "seminarium", "invitation"
    )
    assert code == 0, detail
    assert_shown_as_data(detail)
    assert SHOWN_REPLY in detail  # the last-reply column, as the server wrote it


def test_rehearse_prints_markup_in_the_title_as_written(tmp_path: Path):
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    source.write_text(
        source.read_text(encoding="utf-8").replace('"Förlabb: Skolnärvaro"', f'"{TITLE}"'),
        encoding="utf-8",
    )
    code, output = mailer(
        "rehearse", "-c", str(config), str(source), "--seconds", "1", "--out", str(tmp_path / "r")
    )
    assert code == 0, output
    assert_shown_as_data(output)
    assert f"forlabb: {TITLE}" in output


def test_a_line_break_in_an_event_file_name_forges_no_line_of_check(tmp_path: Path):
    config = make_project(tmp_path)
    forged = "ok  forged.toml: 2 mails, 2 recipients, 3 deliveries"
    write_event(tmp_path, f"x\n{forged}\x1b[2K")  # not a valid event id: one problem line
    code, output = mailer("check", "-c", str(config))
    lines = output.splitlines()
    assert code == 1, output
    assert "\x1b" not in output
    assert len(lines) == 2, lines  # the event's one line, and the summary
    assert not any(line.startswith(forged) for line in lines)
    assert lines[0].startswith(f"{tmp_path}/schedules/x\\n{forged}\\x1b[2K.toml: ")


def test_preview_writes_a_file_for_an_address_with_a_slash(tmp_path: Path):
    config = make_project(tmp_path)
    people = "".join(
        f'[[recipients.people]]\nemail = "{address}"\ngroups = ["registered"]\n\n'
        for address in ("a/b@example.org", "a_b@example.org", "a%2Fb@example.org")
    )
    write_event(tmp_path, "forlabb", EVENT.replace("[[mail]]", people + "[[mail]]", 1))
    out = tmp_path / "preview"
    written = set()
    for address in ("a/b@example.org", "a_b@example.org", "a%2Fb@example.org"):
        code, output = mailer(
            "preview", "-c", str(config), "forlabb", "invitation", "--recipient", address,
            "--out", str(out),
        )  # fmt: skip
        assert code == 0, output
        (eml,) = (Path(line) for line in output.splitlines() if line.endswith(".eml"))
        assert eml.parent == out / "forlabb" / "invitation"  # not a folder named "a"
        message = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert message["To"].addresses[0].addr_spec == address
        written.add(eml)
    assert len(written) == 3  # one file each: no address overwrites another's preview
