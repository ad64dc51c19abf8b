"""Test helpers: a private, throw-away Postfix instance and an SMTP relay probe."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# One smtpd process (limit 1) that stays alive between sessions, so a session after a map
# change is served by a process that had the map open before the change.
_MASTER_CF = """\
{listen} inet n - n - 1 smtpd
  -o max_use=100000
  -o max_idle=3600
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
proxymap unix - - n - - proxymap
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def postfix_env(config_dir: str) -> dict[str, str]:
    """Environment for Postfix tools that must read our private main.cf."""
    env = dict(os.environ)
    env["MAIL_CONFIG"] = config_dir
    return env


def age_config(config_dir: str) -> None:
    """Backdate main.cf/master.cf: Postfix sleeps until a just-written config file is 1 s old."""
    past = time.time() - 60
    for name in ("main.cf", "master.cf"):
        path = os.path.join(config_dir, name)
        if os.path.exists(path):
            os.utime(path, (past, past))


@contextmanager
def postfix_config_dir() -> Iterator[str]:
    """A temp config directory with an empty main.cf: all postmap(1) needs to run."""
    top = tempfile.mkdtemp(prefix="lw-pfcf-")
    try:
        Path(top, "main.cf").write_text("compatibility_level = 3.6\n")
        age_config(top)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@dataclass
class PostfixInstance:
    """A running private Postfix; `root` holds config, queue and data directories."""

    root: str
    config_dir: str
    address: str
    port: int
    settings: dict[str, str] = field(default_factory=dict)

    def master_pid(self) -> int:
        """PID of this instance's master process (from its pid file)."""
        text = Path(self.root, "queue", "pid", "master.pid").read_text()
        return int(text.split()[0])

    def smtpd_pids(self) -> list[int]:
        """PIDs of the smtpd children of our master."""
        master = psutil.Process(self.master_pid())
        return sorted(p.pid for p in master.children() if p.name() == "smtpd")

    def maillog(self) -> str:
        """Everything this instance has logged so far."""
        path = Path(self.root, "maillog")
        return path.read_text(errors="replace") if path.exists() else ""


def _postconf(config_dir: str, settings: dict[str, str]) -> None:
    args = ["postconf", "-c", config_dir, "-e"]
    args += [f"{k}={v}" for k, v in settings.items()]
    subprocess.run(args, check=True, capture_output=True, text=True)


@contextmanager
def postfix_instance(map_spec: str, address: str = "127.0.0.1") -> Iterator[PostfixInstance]:
    """Start a private Postfix that relays only for clients whose IP `map_spec` lists."""
    # Postfix only listens on addresses configured on an interface; lo has 127.0.0.1, and
    # clients may still bind any other 127.0.0.0/8 source address.
    port = _free_port(address)
    root = tempfile.mkdtemp(prefix="lw-postfix-")
    os.chmod(root, 0o755)
    config_dir = os.path.join(root, "etc")
    os.mkdir(config_dir)
    Path(config_dir, "main.cf").write_text("")
    Path(config_dir, "master.cf").write_text(_MASTER_CF.format(listen=f"{address}:{port}"))
    for sub in ("queue", "data"):
        os.mkdir(os.path.join(root, sub))
    data = os.path.join(root, "data")
    shutil.chown(data, "postfix", "postfix")
    settings = {
        "compatibility_level": "3.6",
        "config_directory": config_dir,
        "queue_directory": os.path.join(root, "queue"),
        "data_directory": data,
        "maillog_file": os.path.join(root, "maillog"),
        "maillog_file_prefixes": root,
        "myhostname": "logwatchd-test.invalid",
        "mydomain": "invalid",
        "myorigin": "logwatchd-test.invalid",
        "mydestination": "",
        "relay_domains": "",
        "inet_interfaces": address,
        "inet_protocols": "ipv4",
        # The test client (another 127.0.0.x address) must not be trusted by mynetworks.
        "mynetworks": "192.0.2.254/32",
        "smtpd_relay_restrictions": "",
        "smtpd_recipient_restrictions":
            f"check_client_access {map_spec}, reject_unauth_destination",
        "smtpd_peername_lookup": "no",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "default_transport": "discard",
        "relay_transport": "discard",
        "local_transport": "discard",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "smtpd_banner": "$myhostname ESMTP logwatchd-test",
    }
    _postconf(config_dir, settings)
    age_config(config_dir)
    inst = PostfixInstance(root, config_dir, address, port, settings)
    started = False
    try:
        subprocess.run(["postfix", "-c", config_dir, "start"], check=True,
                       timeout=60)
        started = True
        _wait_listening(address, port)
        yield inst
    finally:
        if started:
            subprocess.run(["postfix", "-c", config_dir, "stop"], capture_output=True,
                           timeout=60, check=False)
            _wait_master_gone(inst)
        shutil.rmtree(root, ignore_errors=True)


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _wait_listening(address: str, port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_master_gone(inst: PostfixInstance, timeout: float = 20.0) -> None:
    pidfile = Path(inst.root, "queue", "pid", "master.pid")
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class RelayProbe:
    """Outcome of one SMTP session: the RCPT reply and the smtpd that served it."""

    code: int
    message: str
    smtpd_pid: int | None
    started: float


def try_relay(inst: PostfixInstance, source: str,
              rcpt: str = "someone@example.net") -> RelayProbe:
    """One SMTP session from `source`: MAIL FROM, RCPT TO an outside domain, RSET, QUIT."""
    started = time.time()
    with smtplib.SMTP(inst.address, inst.port, source_address=(source, 0), timeout=20) as smtp:
        smtp.ehlo("client.invalid")
        pids = inst.smtpd_pids()
        smtp.mail("sender@example.org")
        code, msg = smtp.rcpt(rcpt)
        smtp.rset()
    return RelayProbe(code, msg.decode(errors="replace"), pids[0] if len(pids) == 1 else None,
                      started)
