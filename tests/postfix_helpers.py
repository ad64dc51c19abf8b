"""Test helpers: a private, throw-away Postfix instance, SMTP sessions against it, a relay probe.

The relay-map tests call `postfix_instance(MAP)`: one smtpd, relaying only for clients MAP
lists. The policy and accounting tests pass `options=MailOptions(...)` on top (or instead):

    with dovecot_sasl({"alice": "pw"}) as sasl, postfwd_server(RATE_RULE) as pfw:
        opts = MailOptions(policy=PolicyHook(pfw.endpoint, at_end_of_data=True), sasl=sasl,
                           sasl_access="hash:/tmp/x/sasl-access", relay_domains="dest.test")
        with postfix_instance(options=opts) as inst:
            with smtp_session(inst, Client(addr="198.51.100.7", name="mail.example.org")) as s:
                sent = send_mail(s, "a@example.org", ["x@dest.test", "y@dest.test"])
            inst.wait_log(f"{sent.queue_id}: removed")

What such an instance does (tests/test_postfix_policy_harness.py proves each point):
- smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
  [check_client_access MAP,] reject_unauth_destination. Postfix evaluates it before
  smtpd_recipient_restrictions, so everything below runs after reject_unauth_destination,
  also for authenticated clients (whose sasl_username a quota must see).
- smtpd_recipient_restrictions = [RECIPIENT_CHECKS,] [check_sasl_access SASL_ACCESS,]
  [check_policy_service { ENDPOINT, timeout=5s, default_action=DUNNO }]
  (MailOptions.recipient_checks, e.g. ("reject_non_fqdn_recipient",); sasl_access_in=
  ("sender",) or ("recipient", "sender") puts the table in smtpd_sender_restrictions);
  PolicyHook(at_end_of_data=True) adds the policy service to smtpd_end_of_data_restrictions
  (byte quotas). The SASL table comes before the policy service, so a listed user is refused
  at once even when the policy server is down.
- SMTP AUTH (PLAIN, LOGIN; no TLS) through a private Dovecot (tests/dovecot_helpers.py).
- XCLIENT from 127.0.0.0/8: Client(addr=..., name=...) makes a session look like it came from
  any address with any reverse name (client_name and reverse_client_name; helo too). Without
  `name` the client is `unknown`. Client(source="127.0.0.9") binds a loopback source instead.
- relay_domains: domains accepted from anyone (inbound). Every message goes to the discard
  transport, so it leaves the queue at once and `QUEUEID: removed` appears in the log.
- The log: `inst.maillog_path` (maillog_file via postlogd), the file a logwatchd under test
  follows; `inst.wait_log(needle)`. `inst.held()` lists queue ids on hold (HOLD actions).
- `inst.reconfigure({"smtpd_recipient_restrictions": ...})`: postconf -e and postfix reload
  (returns once no smtpd of the old configuration is left).
- tests/mailrig.py bundles Postfix + Dovecot + a check_sasl_access table for submissions.
- smtpd process limit `MailOptions.smtpd_processes` (default 20) for concurrent clients.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

# One smtpd process (limit 1) that stays alive between sessions, so a session after a map
# change is served by a process that had the map open before the change.
_MASTER_CF = """\
{listen} inet n - n - {smtpd_limit} smtpd
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
showq unix n - n - - showq
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

    @property
    def maillog_path(self) -> str:
        """The file Postfix logs to (maillog_file): what a logwatchd under test follows."""
        return os.path.join(self.root, "maillog")

    def maillog(self) -> str:
        """Everything this instance has logged so far."""
        path = Path(self.maillog_path)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_size(self) -> int:
        """The log's current length: an `after` for wait_log that skips what is there now."""
        try:
            return os.path.getsize(self.maillog_path)
        except FileNotFoundError:
            return 0

    def wait_log(self, needle: str | re.Pattern[str], timeout: float = 20.0,
                 after: int = 0) -> str:
        """Wait until the log (from byte `after`) holds needle (text or regex); return that text."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.maillog()[after:]
            if (needle.search(text) if isinstance(needle, re.Pattern) else needle in text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the Postfix log:\n{text[-4000:]}")
            time.sleep(0.05)

    def reconfigure(self, settings: dict[str, str]) -> None:
        """Change main.cf settings and `postfix reload` (new smtpd processes use them)."""
        _postconf(self.config_dir, settings)
        self.settings.update(settings)
        age_config(self.config_dir)
        start = self.log_size()
        old = [psutil.Process(pid) for pid in self.smtpd_pids()]
        subprocess.run(["postfix", "-c", self.config_dir, "reload"], check=True,
                       capture_output=True, timeout=60)
        # The master logs this once it has re-read main.cf; smtpd processes of the old
        # configuration finish their sessions and exit (an idle one could otherwise still
        # take the next connection with the old settings), new ones read the new settings.
        self.wait_log(re.compile(r"master\[\d+\]: reload "), after=start)
        _, alive = psutil.wait_procs(old, timeout=20)
        if alive:
            raise AssertionError(f"smtpd {[p.pid for p in alive]} still up after the reload")

    def held(self) -> list[str]:
        """Queue ids of the messages on hold (a HOLD action put them there)."""
        hold = Path(self.root, "queue", "hold")
        return sorted(p.name for p in hold.iterdir()) if hold.is_dir() else []


@dataclass
class PolicyHook:
    """Where this Postfix asks a policy server: check_policy_service at RCPT and/or end of data.

    endpoint: "inet:127.0.0.1:10040" or "unix:/absolute/path" (the test smtpd is not chrooted).
    """

    endpoint: str
    at_rcpt: bool = True
    at_end_of_data: bool = False
    timeout: str = "5s"
    default_action: str = "DUNNO"

    def restriction(self) -> str:
        return (f"check_policy_service {{ {self.endpoint}, timeout={self.timeout}, "
                f"default_action={self.default_action} }}")


class SaslServer(Protocol):
    """What Postfix needs of a SASL server: its Dovecot auth socket (tests/dovecot_helpers.py)."""

    socket: str


@dataclass
class MailOptions:
    """What a policy/accounting test instance adds to the plain relay-map instance."""

    policy: PolicyHook | None = None
    sasl: SaslServer | None = None
    sasl_access: str | None = None               # TYPE:PATH for check_sasl_access
    sasl_access_in: tuple[str, ...] = ("recipient",)   # and/or "sender"
    relay_domains: str = ""                      # accepted from anyone (inbound)
    recipient_checks: tuple[str, ...] = ()       # first in smtpd_recipient_restrictions
    xclient_hosts: str = "127.0.0.0/8"
    smtpd_processes: int = 20
    extra: dict[str, str] = field(default_factory=dict)   # any other main.cf settings


def _restrictions(map_spec: str | None, opts: MailOptions | None) -> dict[str, str]:
    """main.cf restriction lists: the relay-map layout alone, or the layout MailOptions asks."""
    if opts is None:
        return {"smtpd_relay_restrictions": "",
                "smtpd_recipient_restrictions":
                    f"check_client_access {map_spec}, reject_unauth_destination"}
    relay = ["permit_mynetworks", "permit_sasl_authenticated"]
    relay += [f"check_client_access {map_spec}"] if map_spec else []
    relay.append("reject_unauth_destination")
    table = f"check_sasl_access {opts.sasl_access}" if opts.sasl_access else None
    rcpt = list(opts.recipient_checks)
    rcpt += [table] if table and "recipient" in opts.sasl_access_in else []
    sender = [table] if table and "sender" in opts.sasl_access_in else []
    eod: list[str] = []
    if opts.policy is not None:
        rcpt += [opts.policy.restriction()] if opts.policy.at_rcpt else []
        eod += [opts.policy.restriction()] if opts.policy.at_end_of_data else []
    settings = {
        "smtpd_relay_restrictions": ", ".join(relay),
        "smtpd_recipient_restrictions": ", ".join(rcpt),
        "smtpd_sender_restrictions": ", ".join(sender),
        "smtpd_end_of_data_restrictions": ", ".join(eod),
        "smtpd_authorized_xclient_hosts": opts.xclient_hosts,
        "relay_domains": opts.relay_domains,
    }
    if opts.sasl is not None:
        settings.update({"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
                         "smtpd_sasl_path": opts.sasl.socket, "smtpd_tls_auth_only": "no"})
    settings.update(opts.extra)
    return settings


def _postconf(config_dir: str, settings: dict[str, str]) -> None:
    args = ["postconf", "-c", config_dir, "-e"]
    args += [f"{k}={v}" for k, v in settings.items()]
    subprocess.run(args, check=True, capture_output=True, text=True)


@contextmanager
def postfix_instance(map_spec: str | None = None, address: str = "127.0.0.1", *,
                     options: MailOptions | None = None) -> Iterator[PostfixInstance]:
    """Start a private Postfix that relays only for clients whose IP `map_spec` lists.

    With `options`, also authenticated clients relay and the policy service, SASL and XCLIENT
    settings of MailOptions apply (module docstring).
    """
    if map_spec is None and options is None:
        raise ValueError("postfix_instance: give a client map, options, or both")
    # Postfix only listens on addresses configured on an interface; lo has 127.0.0.1, and
    # clients may still bind any other 127.0.0.0/8 source address.
    port = free_port(address)
    root = tempfile.mkdtemp(prefix="lw-postfix-")
    os.chmod(root, 0o755)
    config_dir = os.path.join(root, "etc")
    os.mkdir(config_dir)
    Path(config_dir, "main.cf").write_text("")
    limit = 1 if options is None else options.smtpd_processes
    Path(config_dir, "master.cf").write_text(
        _MASTER_CF.format(listen=f"{address}:{port}", smtpd_limit=limit))
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
    settings.update(_restrictions(map_spec, options))
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


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the tests' helpers and daemons bind it next)."""
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


@dataclass
class Client:
    """Who an SMTP session claims to be: XCLIENT attributes, HELO, SMTP AUTH, source address."""

    addr: str | None = None          # XCLIENT ADDR (any address; the socket stays on loopback)
    name: str | None = None          # XCLIENT NAME and REVERSE_NAME; None: "unknown"
    helo: str = "client.invalid"
    login: tuple[str, str] | None = None   # SMTP AUTH user and password
    source: str | None = None        # bind this loopback address (127.0.0.2 ...) instead


def xtext(value: str) -> str:
    """RFC 3461 xtext, how XCLIENT values travel: '+', '=', controls and spaces as +XX."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}"
                   for c in value)


@contextmanager
def smtp_session(inst: PostfixInstance, who: Client | None = None,
                 timeout: float = 30.0) -> Iterator[smtplib.SMTP]:
    """A connected session after EHLO (XCLIENT first, AUTH after when `who` asks); QUIT at end.

    A failed AUTH raises smtplib.SMTPAuthenticationError.
    """
    who = who or Client()
    source = (who.source, 0) if who.source else None
    smtp = smtplib.SMTP(inst.address, inst.port, source_address=source, timeout=timeout)
    try:
        smtp.ehlo(who.helo)
        if who.addr or who.name:
            attrs = []
            if who.addr:
                attrs.append(f"ADDR={xtext(who.addr)}")
            name = xtext(who.name) if who.name else "[UNAVAILABLE]"
            attrs += [f"NAME={name}", f"REVERSE_NAME={name}", f"HELO={xtext(who.helo)}"]
            code, msg = smtp.docmd("XCLIENT", " ".join(attrs))
            if code != 220:
                raise AssertionError(f"XCLIENT refused: {code} {msg!r}")
            smtp.ehlo(who.helo)       # XCLIENT restarts the session: greet again
        if who.login:
            smtp.login(*who.login)
        yield smtp
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


@dataclass
class Sent:
    """What Postfix answered to one message: per recipient, to the data, and the queue id."""

    mail: tuple[int, str]
    rcpt: dict[str, tuple[int, str]]
    data: tuple[int, str] | None     # None when no recipient was accepted (RSET instead)
    queue_id: str | None

    def accepted(self) -> list[str]:
        return [r for r, (code, _) in self.rcpt.items() if code == 250]


_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


def send_mail(smtp: smtplib.SMTP, sender: str, rcpts: list[str],
              body: str = "test message\r\n", subject: str = "logwatchd test") -> Sent:
    """MAIL, one RCPT each, DATA when any was accepted (else RSET); replies kept, not raised."""
    mail = smtp.mail(sender)
    got: dict[str, tuple[int, str]] = {}
    for rcpt in rcpts:
        code, msg = smtp.rcpt(rcpt) if mail[0] == 250 else mail
        got[rcpt] = (code, msg.decode(errors="replace"))
    sent = Sent((mail[0], mail[1].decode(errors="replace")), got, None, None)
    if not sent.accepted():
        smtp.rset()
        return sent
    text = (f"From: <{sender}>\r\nTo: <{sent.accepted()[0]}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.monotonic_ns()}.{os.getpid()}@logwatchd-test.invalid>\r\n"
            f"\r\n{body}")
    try:
        code, msg = smtp.data(text)
    except smtplib.SMTPDataError as exc:
        code, msg = exc.smtp_code, exc.smtp_error
    if code != 250:
        smtp.rset()       # smtplib keeps its transaction state after a refused DATA
    sent.data = (code, msg.decode(errors="replace"))
    found = _QUEUED.search(sent.data[1]) if code == 250 else None
    sent.queue_id = found.group(1) if found else None
    return sent
