"""A real IMAP server for the bounce tests: Debian's Dovecot (package `dovecot-imapd`),
started by the test as the unprivileged `dovecot` user in a temporary folder, IMAP over TLS
only, on 127.0.0.1 and a free port, with a trustme certificate.

Every Dovecot process runs as that one user (`default_internal_user`, `default_login_user`
and the userdb's uid), so nothing needs root but the `runuser` that starts it. The mailbox
is a Maildir in the folder, which the test fills by writing files, as the MTA's local
delivery would. Without Dovecot the tests skip; in CI (CI=true) they fail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.postgres import unavailable

DOVECOT = Path("/usr/sbin/dovecot")
USER = "dovecot"
MAILBOX_USER = "bounces"
PASSWORD = "imap-s3cret"
START_TIMEOUT_S = 20.0
SUBFOLDERS = ("new", "cur", "tmp")

CONFIG = """
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain
default_internal_user = {user}
default_internal_group = {user}
default_login_user = {user}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {folder}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={user} home={folder}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass(frozen=True)
class ImapServer:
    port: int
    ca_file: Path  # the CA that issued the server's certificate
    maildir: Path  # the bounce user's mailbox, as the MTA would fill it
    user: pwd.struct_passwd

    def deliver(self, name: str, content: bytes) -> Path:
        """A message into new/, owned by the server's user, as local delivery leaves it."""
        path = self.maildir / "new" / name
        path.write_bytes(content)
        shutil.chown(path, user=self.user.pw_uid, group=self.user.pw_gid)
        return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_dovecot() -> Iterator[ImapServer]:
    """Start Dovecot for the block; stop it and remove its folder after."""
    if not DOVECOT.exists():
        unavailable(
            "Dovecot is not installed (apt-get install dovecot-imapd)", environ=os.environ
        )
    # As root, Dovecot's own unprivileged user; as anyone else, that person.
    user = pwd.getpwnam(USER) if os.geteuid() == 0 else pwd.getpwuid(os.getuid())
    folder = Path(tempfile.mkdtemp(prefix="mailer-imap-"))  # /tmp: the user can reach it
    config = folder / "dovecot.conf"
    try:
        ca = _prepare(folder)
        port = free_port()
        config.write_text(CONFIG.format(folder=folder, user=user.pw_name, port=port))
        _chown_all(folder, user)
        subprocess.run(_as(user, [str(DOVECOT), "-c", str(config)]), check=True)
        _wait_for(port, folder)
        yield ImapServer(port, ca, folder / "home" / MAILBOX_USER / "Maildir", user)
    finally:
        subprocess.run(
            _as(user, [str(DOVECOT), "-c", str(config), "stop"]),
            check=False,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _prepare(folder: Path) -> Path:
    for sub in ("run", "state", *(f"home/{MAILBOX_USER}/Maildir/{d}" for d in SUBFOLDERS)):
        (folder / sub).mkdir(parents=True)
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    certificate.private_key_pem.write_to_path(str(folder / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    (folder / "passwd").write_text(f"{MAILBOX_USER}:{{PLAIN}}{PASSWORD}\n")
    return folder / "ca.pem"


def _chown_all(folder: Path, user: pwd.struct_passwd) -> None:
    for path in [folder, *folder.rglob("*")]:
        shutil.chown(path, user=user.pw_uid, group=user.pw_gid)


def _as(user: pwd.struct_passwd, argv: list[str]) -> list[str]:
    """As the unprivileged user when the tests run as root (Dovecot would drop to it anyway)."""
    return ["runuser", "-u", user.pw_name, "--", *argv] if os.geteuid() == 0 else argv


def _wait_for(port: int, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    log_file = folder / "dovecot.log"
    log = log_file.read_text(errors="replace") if log_file.exists() else ""
    raise RuntimeError(f"Dovecot did not start on 127.0.0.1:{port}: {log[-2000:]}")
