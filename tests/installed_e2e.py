#!/usr/bin/python3
"""End-to-end run of an installed logwatchd (/usr/sbin/logwatchd), for tests and benches.

Standard library only, so it runs on Debian's python3 beside the installed package and never
imports logwatch itself. Run it in a fresh network namespace (`unshare --net`): it brings up
lo, starts the daemon on a temp log, a temp hash map and a private iptables chain, then
  1. appends a Dovecot POP3 login and waits for `postmap -q IP hash:...` to answer OK;
  2. appends five Postfix "User unknown" lines and waits for the DROP in `iptables -S CHAIN`;
  3. appends --samples logins one by one and times each append -> "action=grant" on stderr.
Prints one JSON object with what it saw; stops the daemon and removes its files at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

DAEMON = "/usr/sbin/logwatchd"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHAIN = "LWD_DEB_E2E"
LOGIN_IP = "192.0.2.11"
GUESSER_IP = "203.0.113.9"


def stamp() -> str:
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def dovecot_login(ip: str) -> str:
    return (f"{stamp()} mx dovecot[812]: pop3-login: Login: user=<alice>, method=PLAIN, "
            f"rip={ip}, lip=192.0.2.1, mpid=4242, TLS, session=<k3Jd8s9Y0MLAqAIL>\n")


def courier_login(ip: str) -> str:
    return (f"{stamp()} mx pop3d: LOGIN, user=bench, ip=[::ffff:{ip}], port=[40512], "
            f"protocol=POP3\n")


def user_unknown(ip: str, n: int) -> str:
    return (f"{stamp()} mx postfix/smtpd[99]: NOQUEUE: reject: RCPT from unknown[{ip}]: 550 "
            f"5.1.1 <u{n}@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<x@example.net> to=<u{n}@example.org> proto=ESMTP helo=<h>\n")


class Daemon:
    """The installed daemon on a private config; stderr lines are timestamped as they arrive."""

    def __init__(self, base: str, dry_run: bool) -> None:
        self.base = base
        self.log = os.path.join(base, "mail.log")
        self.map = f"hash:{base}/relay"
        self.pfdir = os.path.join(base, "postfix")
        os.mkdir(self.pfdir)
        with open(os.path.join(self.pfdir, "main.cf"), "w") as fh:
            fh.write("compatibility_level = 3.6\n")     # postmap needs a main.cf
        open(self.log, "wb").close()
        open(os.path.join(base, "whitelist"), "w").close()
        config = {  # JSON is YAML: no PyYAML needed here. No rules key: the shipped rules.
            "sources": {"logfiles": [self.log]},
            "relay": {"map": self.map, "mynetworks": []},
            "bans": {"whitelist": os.path.join(base, "whitelist")},
            "firewall": {"backend": "iptables", "chain": CHAIN},
            "watchdog": {"enabled": False},
            "daemon": {"state_dir": os.path.join(base, "state"),
                       "socket": os.path.join(base, "control.sock"), "log": "stderr",
                       "actions_log": os.path.join(base, "actions.log")},
        }
        self.config = os.path.join(base, "logwatchd.yaml")
        with open(self.config, "w") as fh:
            json.dump(config, fh)
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        argv = [DAEMON, "--foreground", "--config", self.config, "--log", "stderr"]
        if dry_run:
            argv.append("--dry-run")
        env = {"PATH": PATH, "LANG": "C.UTF-8", "MAIL_CONFIG": self.pfdir}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=base)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace")))
                self.cond.notify_all()

    def wait_for(self, needle: str, timeout: float, after: int = 0) -> float | None:
        """Arrival time of the first stderr line (from index `after`) holding needle."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, line in self.lines[after:]:
                    if needle in line:
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.5))

    def append(self, text: str) -> float:
        """Append with one write(); returns the time just after it."""
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, text.encode())
            return time.monotonic()
        finally:
            os.close(fd)

    def output(self) -> str:
        with self.cond:
            return "".join(line for _, line in self.lines)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env,
                          stdin=subprocess.DEVNULL)


def until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def checks(d: Daemon, out: dict[str, object]) -> None:
    """Steps 1 and 2: the relay map grant and the firewall ban, seen with the admin's tools."""
    env = {"PATH": PATH, "MAIL_CONFIG": d.pfdir}
    query = ["postmap", "-q", LOGIN_IP, d.map]
    d.append(dovecot_login(LOGIN_IP))
    until(lambda: run(query, env).stdout.strip() == "OK", 10)
    answer = run(query, env)
    out["postmap_q"] = {"rc": answer.returncode, "out": answer.stdout.strip()}
    d.append("".join(user_unknown(GUESSER_IP, n) for n in range(5)))
    listing = ["iptables", "-S", CHAIN]
    until(lambda: f"-s {GUESSER_IP}/32" in run(listing).stdout, 10)
    out["iptables_S"] = run(listing).stdout


def latencies(d: Daemon, samples: int, gap: float) -> list[float | None]:
    """Step 3: append -> "action=grant ip=..." on stderr, for new IPs one at a time."""
    found: list[float | None] = []
    for i in range(samples):
        ip = f"198.51.{100 + i // 250}.{i % 250 + 1}"
        mark = len(d.lines)
        t0 = d.append(courier_login(ip))
        at = d.wait_for(f"action=grant ip={ip} ", 5.0, after=mark)
        found.append(None if at is None else max(0.0, at - t0))
        if found[-3:] == [None, None, None]:
            break                   # the daemon reads nothing: do not wait out every sample
        time.sleep(gap * (0.5 + random.random()))     # no lock-step with a poll timer
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5, help="latency samples (default 5)")
    ap.add_argument("--gap", type=float, default=0.05, help="mean seconds between samples")
    ap.add_argument("--dry-run", action="store_true",
                    help="daemon in --dry-run: latency without postmap (latency only)")
    args = ap.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    base = tempfile.mkdtemp(prefix="lwd-installed-")
    os.chmod(base, 0o755)
    out: dict[str, object] = {"daemon": DAEMON}
    d = Daemon(base, args.dry_run)
    try:
        started = d.wait_for("action=start ", 30.0)
        out["started"] = started is not None
        if started is not None:
            if not args.dry_run:
                checks(d, out)
            out["latency"] = latencies(d, args.samples, args.gap)
    finally:
        out["exit"] = d.stop()
        out["stderr"] = d.output()[-6000:]
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
