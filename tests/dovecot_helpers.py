"""A private, throw-away Dovecot that only authenticates: the SASL server for a test Postfix.

    with dovecot_sasl({"alice": "secret"}) as sasl:     # root; dovecot -F -c <temp conf>
        with postfix_instance(options=MailOptions(sasl=sasl)) as inst:
            ...                                          # smtpd_sasl_type = dovecot
        sasl.set_user("bob", "pw")                       # passwd-file rewritten, re-read by Dovecot

No mail protocol listens (protocols = none); Postfix talks to the auth socket `sasl.socket`
(mode 0666, absolute path, the test smtpd is not chrooted). Passwords are stored {PLAIN}.
The process runs in the foreground and is stopped (SIGTERM, then SIGKILL) whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_CONF = """\
protocols = none
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = lwtest-{name}
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {root}/auth {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass
class DovecotSasl:
    """A running auth-only Dovecot; `socket` is the path Postfix's smtpd_sasl_path names."""

    root: str
    socket: str
    users: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def set_user(self, user: str, password: str) -> None:
        """Add or change a user; Dovecot re-reads the passwd-file when it changes."""
        self.users[user] = password
        self._write_users()

    def remove_user(self, user: str) -> None:
        self.users.pop(user, None)
        self._write_users()

    def log(self) -> str:
        path = Path(self.root, "dovecot.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_users(self) -> None:
        for user, password in self.users.items():
            if any(c in user + password for c in ":\n\r"):
                raise ValueError(f"user {user!r}: ':' and line breaks do not fit a passwd-file")
        text = "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items())
        tmp = Path(self.root, "users.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        # A new mtime second makes Dovecot notice the change at once.
        past = time.time() - 2
        os.utime(tmp, (past, past))
        os.replace(tmp, Path(self.root, "users"))


@contextmanager
def dovecot_sasl(users: dict[str, str] | None = None,
                 timeout: float = 20.0) -> Iterator[DovecotSasl]:
    """Start `dovecot -F` on a private config with these users; stop it and remove everything."""
    root = tempfile.mkdtemp(prefix="lw-dovecot-")
    os.chmod(root, 0o755)          # the auth worker runs as user dovecot and reads `users`
    sasl = DovecotSasl(root, os.path.join(root, "auth"), dict(users or {}))
    sasl._write_users()
    conf = Path(root, "dovecot.conf")
    conf.write_text(_CONF.format(root=root, name=os.path.basename(root)))
    try:
        with open(os.path.join(root, "stderr"), "wb") as err:
            sasl.proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        _wait_socket(sasl, timeout)
        yield sasl
    finally:
        _stop(sasl)
        shutil.rmtree(root, ignore_errors=True)


def _wait_socket(sasl: DovecotSasl, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(sasl.socket):
        assert sasl.proc is not None
        if sasl.proc.poll() is not None:
            err = Path(sasl.root, "stderr").read_text(errors="replace")
            raise RuntimeError(f"dovecot exited with {sasl.proc.returncode}: {err}{sasl.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dovecot: no auth socket after {timeout} s: {sasl.log()}")
        time.sleep(0.05)


def _stop(sasl: DovecotSasl) -> None:
    proc = sasl.proc
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sasl.proc = None
