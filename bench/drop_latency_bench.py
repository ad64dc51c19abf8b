#!/usr/bin/env python3
"""Line -> DROP latency, side by side: logwatchd, sshguard and fail2ban following one log file.

All contenders run at once in a network namespace this script creates, each with its own
iptables chain, and follow the same file. For each of --ips fresh IPs it appends lines 1-4
(checks that nobody has banned yet), waits --pause, appends the 5th, then runs `iptables -S`
every --poll seconds until every contender's chain holds the IP; prints p50/p95/p99/max each
and, per IP, who banned first. --watch monitor takes the times from `nft monitor rules` instead
(the commit's own time; no poll competing for the CPU, whose cost blurs the poll figures).
The line is a Postfix SASL failure: sshguard's parser knows no "User unknown" reject, and all
three count one SASL failure as one attack (logwatchd maxretry 5, sshguard THRESHOLD 50 at 10
per attack, fail2ban maxretry 5). Needs root. Everything is removed afterwards, even on failure.
    .venv/bin/python bench/drop_latency_bench.py [--ips 50] [--contenders logwatchd,sshguard,fail2ban]
        [--watch poll|monitor] [--tools 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from benchstats import nearest_rank as pct  # noqa: E402

SSHG = Path("/usr/libexec/sshguard")
TIMEOUT = 5.0                      # seconds a contender gets to ban before the sample is a miss
MAX_MISSES = 3                     # then it is dropped from the run


@dataclass
class Contender:
    """One tool under test: the chain its DROP rules appear in, and its processes."""

    name: str
    chain: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)    # ip -> ms
    misses: int = 0
    early: int = 0
    note: str = ""

    def stop(self) -> None:
        """SIGTERM its processes (last first), SIGKILL what is left after 5 s."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def sasl_failure(ip: str, n: int) -> str:
    now = datetime.now()
    return (f"{now:%b} {now.day:2d} {now:%H:%M:%S} mx postfix/smtpd[{4000 + n}]: warning: "
            f"unknown[{ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n")


def iptables(*args: str) -> str:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def start_logwatchd(base: Path, log: Path, stack: ExitStack) -> Contender:
    """The real daemon from this tree: defaults (5 failures within findtime ban), iptables."""
    from daemon_harness import DaemonProc
    c = Contender("logwatchd", "LWD_BENCH")
    (base / "logwatchd").mkdir()
    d = DaemonProc(base / "logwatchd", {
        "sources": {"logfiles": [str(log)]},
        "firewall": {"backend": "iptables", "chain": c.chain, "ports": [25]},
        "relay": {"enabled": False},
    })
    stack.callback(d.stop)
    d.start()
    return c


def start_sshguard(base: Path, log: Path, stack: ExitStack) -> Contender | None:
    """Debian's sshguard pipeline as /usr/sbin/sshguard builds it, with our settings as flags
    (its wrapper only reads /etc/sshguard/sshguard.conf, which we leave alone)."""
    if not (SSHG / "sshg-blocker").exists():
        print("sshguard  not installed (apt-get install sshguard): skipped")
        return None
    c = Contender("sshguard", "sshguard")
    stack.callback(c.stop)
    for tool in ("iptables", "ip6tables"):     # its backend flushes both at exit
        subprocess.run([tool, "-w", "-N", "sshguard"], check=True, timeout=30)
        subprocess.run([tool, "-w", "-I", "INPUT", "-j", "sshguard"], check=True, timeout=30)
    wl = base / "sshguard.whitelist"
    wl.write_text("127.0.0.0/8\n")
    argvs = [["tail", "-n0", "-F", str(log)],
             [str(SSHG / "sshg-parser")],
             [str(SSHG / "sshg-blocker"), "-a", "50", "-p", "3600", "-s", "1800", "-w", str(wl)],
             [str(SSHG / "sshg-fw-iptables")]]
    prev = None
    for i, argv in enumerate(argvs):
        last = i == len(argvs) - 1
        p = subprocess.Popen(argv, stdin=prev.stdout if prev else subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL if last else subprocess.PIPE)
        if prev and prev.stdout:
            prev.stdout.close()         # only the next stage holds the pipe
        c.procs.append(p)
        prev = p
    time.sleep(0.5)                     # tail must be following before the first line
    return c


def start_fail2ban(base: Path, log: Path, stack: ExitStack) -> Contender | None:
    """fail2ban-server in the foreground on a private copy of /etc/fail2ban: one postfix jail
    (mode extra: SASL failures and user-unknown rejects), iptables-multiport, maxretry 5."""
    if shutil.which("fail2ban-server") is None:
        print("fail2ban  not installed (apt-get install fail2ban): skipped")
        return None
    backend = "pyinotify" if importlib.util.find_spec("pyinotify") else "polling"
    conf = base / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for f in (conf / "jail.d").iterdir():
        f.unlink()                      # Debian enables an sshd jail there
    (conf / "fail2ban.local").write_text(
        "[DEFAULT]\ndbfile = :memory:\nsyslogsocket = auto\n")
    (conf / "jail.local").write_text(
        "[DEFAULT]\nignoreself = false\nignoreip =\nbanaction = iptables-multiport\n"
        f"[postfix]\nenabled = true\nfilter = postfix[mode=extra]\nport = smtp\n"
        f"logpath = {log}\nbackend = {backend}\nmaxretry = 5\nfindtime = 600\nbantime = 3600\n")
    sock, flog = base / "f2b.sock", base / "f2b.log"
    c = Contender("fail2ban", "f2b-postfix", note=f"backend {backend}")
    stack.callback(c.stop)
    c.procs.append(subprocess.Popen(
        [shutil.which("fail2ban-server") or "fail2ban-server", "-f", "-x", "-c", str(conf), "-s", str(sock), "-p", str(base / "f2b.pid"),
         "--logtarget", str(flog), "--loglevel", "INFO"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if c.procs[0].poll() is not None:
            raise SystemExit(f"fail2ban-server exited: {flog.read_text(errors='replace')[-2000:]}")
        if flog.exists() and "Jail 'postfix' started" in flog.read_text(errors="replace"):
            break
        time.sleep(0.1)
    else:
        raise SystemExit("fail2ban did not start its postfix jail in 60 s")
    # Its iptables action creates the chain at the first ban only; nothing to wait for.
    return c


def banned(listing: str, c: Contender, ip: str) -> bool:
    return f"-A {c.chain} -s {ip}/32 " in listing


class NftMonitor:
    """`nft monitor rules` in the namespace: each rule addition stamped as it arrives, so the
    time is the commit's and no poll competes with the contenders for the CPU."""

    def __init__(self, stack: ExitStack) -> None:
        self.events: list[tuple[float, str]] = []
        # stdbuf: nft buffers its output when it is not a terminal.
        self.proc = subprocess.Popen(["stdbuf", "-oL", "nft", "monitor", "rules"],
                                     stdout=subprocess.PIPE, text=True)
        stack.callback(self.proc.wait)
        stack.callback(self.proc.kill)
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append((time.perf_counter(), line))

    def when(self, c: Contender, ip: str) -> float | None:
        """When c's rule for ip was added (None: not yet)."""
        for t, line in list(self.events):
            if f" {c.chain} " in line and f" saddr {ip} " in line:
                return t
        return None


def _wait_polling(pending: list[Contender], ip: str, t0: float, poll: float) -> None:
    while pending and time.perf_counter() - t0 < TIMEOUT:
        listing = iptables("-S")
        now = time.perf_counter()
        for c in [c for c in pending if banned(listing, c, ip)]:
            c.times[ip] = (now - t0) * 1000
            pending.remove(c)
        time.sleep(poll)


def _wait_monitor(mon: NftMonitor, pending: list[Contender], ip: str, t0: float) -> None:
    while pending and time.perf_counter() - t0 < TIMEOUT:
        for c in list(pending):
            t = mon.when(c, ip)
            if t is not None:
                c.times[ip] = (t - t0) * 1000
                pending.remove(c)
        time.sleep(0.001)


def measure(contenders: list[Contender], log: Path, ips: int, pause: float, poll: float,
            mon: NftMonitor | None) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(ips):
            ip = f"198.18.{i // 250 + 1}.{i % 250 + 1}"
            live = [c for c in contenders if c.misses < MAX_MISSES]
            os.write(fd, "".join(sasl_failure(ip, n) for n in range(4)).encode())
            time.sleep(pause)
            listing = iptables("-S")
            # A ban before the 5th line is a misconfigured threshold, reported as "early".
            pending = [c for c in live if not banned(listing, c, ip)]
            for c in live:
                c.early += c not in pending
            data = sasl_failure(ip, 4).encode()
            t0 = time.perf_counter()
            os.write(fd, data)
            if mon is None:
                _wait_polling(pending, ip, t0, poll)
            else:
                _wait_monitor(mon, pending, ip, t0)
            for c in pending:
                c.misses += 1
    finally:
        os.close(fd)


def tool_costs(n: int) -> None:
    """One ban by each tool, interleaved: iptables-restore --noflush (logwatchd's batch) against
    iptables -I (sshguard's, which also runs iptables -w -V first to probe for -w)."""
    ways = {"iptables-restore --noflush, 1 rule": "R", "iptables -w -I, 1 rule": "I",
            "iptables -w -V + iptables -w -I (sshguard)": "V"}
    for chain in ways.values():
        iptables("-N", f"LWD_TOOL_{chain}")
    got: dict[str, list[float]] = {w: [] for w in ways}
    order = list(ways.items())
    for i in range(n):
        ip = f"203.0.113.{i % 250 + 1}/32"
        # Rotated: whichever runs first in a round is measurably slower.
        for way, chain in order[i % 3:] + order[:i % 3]:
            t0 = time.perf_counter()
            if chain == "R":
                subprocess.run(["iptables-restore", "--noflush", "-w"], check=True, timeout=30,
                               capture_output=True,
                               input=f"*filter\n-A LWD_TOOL_R -s {ip} -j DROP\nCOMMIT\n", text=True)
            else:
                if chain == "V":
                    iptables("-V")
                iptables("-I", f"LWD_TOOL_{chain}", "-s", ip, "-j", "DROP")
            got[way].append((time.perf_counter() - t0) * 1000)
    for chain in ways.values():
        iptables("-F", f"LWD_TOOL_{chain}")
        iptables("-X", f"LWD_TOOL_{chain}")
    print(f"one ban by the tool alone ({n} each, interleaved in turn, no contender running; ms):")
    for way, t in got.items():
        print(f"  {way:44} p50 {pct(t, 50):5.1f}  p95 {pct(t, 95):5.1f}")


def report(contenders: list[Contender], poll_ms: float | None) -> None:
    if poll_ms is None:
        print("line 5 appended -> DROP rule added, as `nft monitor rules` reports it (ms)")
    else:
        print(f"line 5 appended -> DROP rule listed by iptables -S (ms; one poll costs "
              f"~{poll_ms:.1f} ms and is included)")
    print(f"{'':10} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  misses early")
    for c in contenders:
        t = list(c.times.values())
        row = (f"{pct(t, 50):7.1f} {pct(t, 95):7.1f} {pct(t, 99):7.1f} {max(t):7.1f}" if t
               else f"{'-':>7} {'-':>7} {'-':>7} {'-':>7}")
        print(f"{c.name:10} {len(t):4} {row}  {c.misses:6} {c.early:5}  {c.note}")
    first, rest = contenders[0], contenders[1:]
    for c in rest:
        both = [ip for ip in first.times if ip in c.times]
        a = sum(first.times[ip] < c.times[ip] for ip in both)
        b = sum(first.times[ip] > c.times[ip] for ip in both)
        print(f"{first.name} vs {c.name}, same IP: {first.name} first {a}, {c.name} first {b}, "
              f"tied {len(both) - a - b}")


STARTERS = {"logwatchd": start_logwatchd, "sshguard": start_sshguard, "fail2ban": start_fail2ban}


def inner(args: argparse.Namespace) -> None:
    # SIGTERM from the outer process unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(args.base)
    log = base / "mail.log"
    log.touch()
    if args.tools:
        tool_costs(args.tools)
    with ExitStack() as stack:
        contenders = [c for name in args.contenders.split(",")
                      if (c := STARTERS[name](base, log, stack)) is not None]
        time.sleep(1.0)
        t = time.perf_counter()
        for _ in range(10):
            iptables("-S")
        poll_ms = (time.perf_counter() - t) * 100
        mon = NftMonitor(stack) if args.watch == "monitor" else None
        measure(contenders, log, args.ips, args.pause, args.poll, mon)
        report(contenders, None if mon else poll_ms)


def group_members(pgid: int) -> list[int]:
    """Processes still in the run's process group."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            # Fields after the ")" of the command name: state, ppid, pgrp.
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                out.append(int(d.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def outer(args: argparse.Namespace) -> int:
    """Create the namespace, run the measurement inside it, remove everything."""
    from netns import netns
    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the run and delete the namespace.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = tempfile.mkdtemp(prefix="lwd-dropbench-")
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        ns = stack.enter_context(netns("ldrp"))
        argv = ns.argv([sys.executable, __file__, "--inner", "--base", base, "--ips", str(args.ips),
                        "--contenders", args.contenders, "--pause", str(args.pause),
                        "--poll", str(args.poll), "--tools", str(args.tools),
                        "--watch", args.watch])
        # Its own process group: everything the run starts goes with it at the end.
        child = subprocess.Popen(argv, start_new_session=True)
        try:
            return child.wait(timeout=args.ips * (args.pause + 3 * TIMEOUT) + 180)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            print("interrupted or overdue: stopping", file=sys.stderr)
            return 1
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            for pid in group_members(child.pid):   # anything that outlived the run
                os.kill(pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ips", type=int, default=50, help="fresh IPs, one sample each")
    ap.add_argument("--contenders", default="logwatchd,sshguard,fail2ban")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between line 4 and 5")
    ap.add_argument("--poll", type=float, default=0.001, help="seconds between iptables -S")
    ap.add_argument("--watch", choices=("poll", "monitor"), default="poll",
                    help="poll: iptables -S every --poll s; monitor: nft monitor's event times")
    ap.add_argument("--tools", type=int, default=30,
                    help="first time one ban by iptables-restore and by iptables -I (0: skip)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args()
    unknown = set(args.contenders.split(",")) - set(STARTERS)
    if unknown:
        ap.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    if args.inner:
        inner(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespace, iptables)")
    sys.exit(outer(args))


if __name__ == "__main__":
    main()
