"""Policy service benchmark: logwatchd's Postfix policy service next to postfwd2, in one run.

Usage (root): .venv/bin/python bench/policy_bench.py [--requests 1000000] [--seconds 10]
    [--conns 50] [--keys 100000] [--rate 2000] [--flood 20000] [--settle 10]
    [--only postfwd|logwatchd|yardstick]

Both servers get the same quota: at most --limit recipients per client address in --period
seconds, counted at RCPT (postfwd: rate(client_address/...); logwatchd: a `quotas:` entry).
Clients send what Postfix 3.7 sends at RCPT (every attribute of a policy request), with
--keys distinct client addresses, over --conns persistent connections (like that many smtpd).
Printed for each server:
  - requests/s, closed loop (each connection sends its next request on the reply), from
    --procs client processes; logwatchd for --requests requests, postfwd for --seconds;
  - reply latency p50/p99 at --rate requests/s, paced (open loop: measured from the time a
    request was due, so a stall counts for every request it delays);
  - logwatchd only: the same while --flood lines/s are appended to the log it follows;
  - RSS (logwatchd after --requests requests; postfwd: all its processes);
  - first, the yardstick: the same paced run against a trivial Python server that answers
    DUNNO, the share of the client and of the machine's other load in those figures.
logwatchd runs with --dry-run --firewall none and a private state dir; postfwd2 on a private
port (tests/postfwd_helpers.py). Nothing is left behind.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

import psutil  # noqa: E402
from benchstats import pct  # noqa: E402
from daemon_harness import DaemonProc, pyenv  # noqa: E402
from maillog import generate  # noqa: E402
from postfwd_helpers import postfwd_server, rate_rule  # noqa: E402

# One RCPT-state request as Postfix 3.7 sends it (SMTPD_POLICY_README, attribute list of 3.7).
REQUEST = (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    "helo_name=mx%(h)d.example.net\nqueue_id=%(qid)s\nsender=news%(h)d@example.net\n"
    "recipient=user%(r)d@example.org\nrecipient_count=0\nclient_address=%(ip)s\n"
    "client_name=mx%(h)d.example.net\nreverse_client_name=mx%(h)d.example.net\n"
    "instance=%(inst)s\nsasl_method=\nsasl_username=\nsasl_sender=\nsize=%(size)d\n"
    "ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n"
    "encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\n"
    "encryption_keysize=256\netrn_domain=\nstress=\nclient_port=%(port)d\n"
    "policy_context=\nserver_address=192.0.2.25\nserver_port=25\n\n")


def key_ip(k: int) -> str:
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


class Requests:
    """An endless supply of distinct RCPT requests spread over `keys` client addresses."""

    def __init__(self, keys: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.keys = keys
        self.seed = seed
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        k = self.rng.randrange(self.keys)
        return (REQUEST % {
            "h": k % 997, "qid": f"{self.seed:02X}{self.n:09X}", "r": self.n % 50000,
            "ip": key_ip(k), "inst": f"{self.seed:x}.{self.n:x}.0", "size": 1000 + k % 9000,
            "port": 1024 + self.n % 60000}).encode()


def connect(address: str, port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((address, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def _closed_worker(address: str, port: int, conns: int, budget: int, seconds: float,
                   keys: int, seed: int, start_at: float, out: mp.Queue) -> None:
    """One client process: `conns` connections, each sending its next request on the reply."""
    reqs = Requests(keys, seed)
    socks = connect(address, port, conns)
    sel = selectors.DefaultSelector()
    bufs = {s.fileno(): b"" for s in socks}
    replies: Counter[str] = Counter()
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.monotonic() + seconds
    sent = 0
    for s in socks:
        s.sendall(reqs.next())
        sent += 1
        sel.register(s, selectors.EVENT_READ)
    t0 = time.perf_counter()
    done = 0
    while bufs:
        for key, _ in sel.select(1.0):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            data = s.recv(65536)
            if not data:
                raise SystemExit(f"server closed a connection after {done} replies")
            buf = bufs[s.fileno()] + data
            if not buf.endswith(b"\n\n"):
                bufs[s.fileno()] = buf
                continue
            bufs[s.fileno()] = b""
            done += 1
            replies[buf.split(b"\n", 1)[0].decode(errors="replace")[7:].split(" ", 1)[0]] += 1
            if sent < budget and time.monotonic() < deadline:
                s.sendall(reqs.next())
                sent += 1
            else:
                sel.unregister(s)
                del bufs[s.fileno()]
    elapsed = time.perf_counter() - t0
    for s in socks:
        s.close()
    out.put((done, elapsed, dict(replies)))


@dataclass
class Throughput:
    requests: int
    seconds: float
    replies: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def closed_loop(address: str, port: int, conns: int, procs: int, budget: int, seconds: float,
                keys: int) -> Throughput:
    """As many requests as the server answers, from `procs` processes (the client is Python)."""
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 0.5 + 0.05 * conns
    workers = [ctx.Process(target=_closed_worker,
                           args=(address, port, conns // procs + (i < conns % procs),
                                 budget // procs + (i < budget % procs), seconds, keys,
                                 100 + i, start_at, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    results = [out.get(timeout=min(seconds, 1e6) + 3600) for _ in workers]
    for w in workers:
        w.join()
    total = Throughput(sum(r[0] for r in results), max(r[1] for r in results))
    for r in results:
        total.replies.update(r[2])
    return total


_PACED_RUNS = iter(range(7, 100))


def paced(address: str, port: int, conns: int, rate: float, seconds: float,
          keys: int) -> list[float]:
    """Reply latencies (s) at a fixed request rate, each from the moment it was due.

    Every run has its own instance ids: a server must count each request (a resent instance
    is counted once, which would make a second run nearly free)."""
    reqs = Requests(keys, next(_PACED_RUNS))
    socks = connect(address, port, conns)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    idle = deque(socks)
    due_of: dict[int, float] = {}
    bufs: dict[int, bytes] = {s.fileno(): b"" for s in socks}
    backlog: deque[float] = deque()
    lat: list[float] = []
    total = int(rate * seconds)
    t0 = time.perf_counter() + 0.2
    k = 0
    while len(lat) < total:
        now = time.perf_counter()
        while k < total and t0 + k / rate <= now:
            backlog.append(t0 + k / rate)
            k += 1
        while backlog and idle:
            s = idle.popleft()
            due_of[s.fileno()] = backlog.popleft()
            s.sendall(reqs.next())
        wait = max(0.0, t0 + k / rate - time.perf_counter()) if k < total else 1.0
        for key, _ in sel.select(min(wait, 1.0)):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            data = s.recv(65536)
            if not data:
                raise SystemExit("server closed a connection during the paced run")
            buf = bufs[s.fileno()] + data
            if buf.endswith(b"\n\n"):
                lat.append(time.perf_counter() - due_of.pop(s.fileno()))
                bufs[s.fileno()] = b""
                idle.append(s)
            else:
                bufs[s.fileno()] = buf
    for s in socks:
        s.close()
    return lat


def _flood_worker(path: str, rate: int, stop: mp.Event, out: mp.Queue) -> None:
    """Append `rate` lines/s of realistic mail log (bench/maillog.py) in 10 ms batches."""
    bodies = [line[15:] for line in generate(50_000, seed=3).split(b"\n") if line]
    per_batch = max(1, rate // 100)
    written = 0
    t0 = time.perf_counter()
    with open(path, "ab") as fh:
        while not stop.is_set():
            stamp = time.strftime("%b %e %H:%M:%S").encode()
            chunk = b"".join(stamp + bodies[(written + i) % len(bodies)] + b"\n"
                             for i in range(per_batch))
            fh.write(chunk)
            fh.flush()
            written += per_batch
            pause = t0 + written / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    out.put((written, time.perf_counter() - t0))


@contextmanager
def flood(path: Path, rate: int) -> Iterator[list[float]]:
    """Run the log flood while the block runs; afterwards the list holds [lines, seconds]."""
    ctx = mp.get_context("fork")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_flood_worker, args=(str(path), rate, stop, out))
    proc.start()
    result: list[float] = []
    try:
        time.sleep(1.0)          # let the daemon settle into the flood first
        yield result
    finally:
        stop.set()
        result.extend(out.get(timeout=30))
        proc.join()


def _dunno_server(sock: socket.socket) -> None:
    """The yardstick: answers every request DUNNO at once (one process, selectors)."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    bufs: dict[int, bytes] = {}
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if s is sock:
                conn, _ = sock.accept()
                sel.register(conn, selectors.EVENT_READ)
                bufs[conn.fileno()] = b""
                continue
            data = s.recv(65536)
            if not data:
                sel.unregister(s)
                bufs.pop(s.fileno(), None)
                s.close()
                continue
            buf = bufs[s.fileno()] + data
            n = buf.count(b"\n\n")
            bufs[s.fileno()] = buf[buf.rfind(b"\n\n") + 2:] if n else buf
            if n:
                s.sendall(b"action=DUNNO\n\n" * n)


def bench_yardstick(a: argparse.Namespace) -> None:
    """The client's own floor on this machine now: the paced run against a DUNNO server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_dunno_server, args=(sock,), daemon=True)
    proc.start()
    try:
        lat = paced("127.0.0.1", sock.getsockname()[1], a.conns, a.rate, a.paced_seconds,
                    a.keys)
        print(f"yardstick  at {a.rate:,.0f}/s    {ms(lat)}  (a Python server answering DUNNO: "
              "the client's and the machine's own share)")
        print(f"           {stalls(lat, a.rate)}")
    finally:
        proc.terminate()
        proc.join()
        sock.close()


def logwatchd_has_policy() -> bool:
    """Whether this tree's logwatchd knows --policy-listen (the policy service is merged)."""
    helped = subprocess.run([sys.executable, "-m", "logwatch.daemon.app", "--help"],
                            capture_output=True, text=True, env=pyenv(), cwd=REPO, check=False)
    return "--policy-listen" in helped.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ms(values: list[float]) -> str:
    return (f"p50 {pct(values, 50) * 1000:6.2f} ms  p99 {pct(values, 99) * 1000:6.2f} ms  "
            f"max {max(values, default=0) * 1000:7.2f} ms  (n={len(values)})")


def stalls(values: list[float], rate: float, over: float = 0.010) -> str:
    """Where the replies slower than `over` cluster: how many clusters and their spacing."""
    idx = [i for i, v in enumerate(values) if v > over]
    starts = [i for n, i in enumerate(idx) if n == 0 or i - idx[n - 1] > rate * 0.02]
    if len(starts) < 2:
        return f"{len(idx)} replies > {over * 1000:.0f} ms"
    gaps = sorted((b - a) / rate for a, b in zip(starts, starts[1:], strict=False))
    return (f"{len(idx)} replies > {over * 1000:.0f} ms in {len(starts)} stalls, "
            f"one every {gaps[len(gaps) // 2]:.2f} s (median)")


def replies(t: Throughput) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in t.replies.most_common())


def bench_postfwd(a: argparse.Namespace) -> Throughput:
    rule = rate_rule("client_address", a.limit, a.period, "BENCH")
    with postfwd_server(rule, servers=a.conns + 5) as pfw:
        t = closed_loop(pfw.address, pfw.port, a.conns, a.procs, a.requests, a.seconds, a.keys)
        print(f"postfwd2   requests/s  {t.rate:10,.0f}   ({t.requests:,} in {t.seconds:.1f} s; "
              f"{replies(t)})")
        lat = paced(pfw.address, pfw.port, a.conns, a.rate, a.paced_seconds, a.keys)
        over = "  (above its capacity: requests queue)" if t.rate < a.rate else ""
        print(f"postfwd2   at {a.rate:,.0f}/s    {ms(lat)}{over}")
        rss, uss = pfw.memory()
        print(f"postfwd2   RSS         {rss / 1e6:10.1f} MB  (USS {uss / 1e6:.1f} MB; "
              f"{len(pfw.processes())} processes together)")
    return t


def bench_logwatchd(a: argparse.Namespace, top: Path) -> Throughput:
    port = free_port()
    d = DaemonProc(top, extra_args=("--dry-run", "--firewall", "none",
                                    "--policy-listen", f"inet:127.0.0.1:{port}"))
    d.settings["quotas"] = [{"name": "bench", "key": "client_address", "count": "recipients",
                             "limit": a.limit, "period": a.period, "action": "defer"}]
    d.write_config()
    d.start()
    try:
        proc = psutil.Process(d.proc.pid)
        rss0 = proc.memory_info().rss
        t = closed_loop("127.0.0.1", port, a.conns, a.procs, a.requests, 1e9, a.keys)
        rss = proc.memory_info().rss
        writer = sum(c.memory_info().rss for c in proc.children(recursive=True))
        print(f"logwatchd  requests/s  {t.rate:10,.0f}   ({t.requests:,} in {t.seconds:.1f} s; "
              f"{replies(t)})")
        print(f"logwatchd  RSS         {rss / 1e6:10.1f} MB  after {t.requests:,} requests "
              f"(at start {rss0 / 1e6:.1f} MB; its store writer process {writer / 1e6:.1f} MB)")
        # What the closed loop left to write (changed quota counters) goes to the store
        # first: the paced runs measure the steady state over the keys now known.
        time.sleep(a.settle)
        lat = paced("127.0.0.1", port, a.conns, a.rate, a.paced_seconds, a.keys)
        print(f"logwatchd  at {a.rate:,.0f}/s    {ms(lat)}")
        print(f"           {stalls(lat, a.rate)}")
        with flood(d.log, a.flood) as fl:
            lat = paced("127.0.0.1", port, a.conns, a.rate, a.paced_seconds, a.keys)
        print(f"logwatchd  at {a.rate:,.0f}/s + {fl[0] / fl[1]:,.0f} log lines/s    {ms(lat)}")
        print(f"           {stalls(lat, a.rate)}")
        if d.proc.poll() is not None:
            print("logwatchd  EXITED during the bench:\n" + d.stderr()[-3000:])
        return t
    finally:
        d.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=10.0, help="postfwd's closed-loop time")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--procs", type=int, default=2, help="client processes (closed loop)")
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--flood", type=int, default=20_000)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--period", type=int, default=60)
    p.add_argument("--settle", type=float, default=30.0,
                   help="seconds between logwatchd's closed loop and its paced runs")
    p.add_argument("--only", choices=("postfwd", "logwatchd", "yardstick"))
    p.add_argument("--nice", type=int, default=0,
                   help="run the client and every server measured this much nicer (negative: "
                        "ahead of the machine's other load; all of them alike)")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (postfwd2 drops to nobody; the daemon's state dir)")
    if a.nice:
        os.nice(a.nice)     # inherited by the client processes and every server started
    print(f"{a.conns} persistent connections, {a.keys:,} quota keys (client_address), quota "
          f"{a.limit} recipients/{a.period} s; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}" + (f"; client and servers at nice {a.nice:+d}"
                                         if a.nice else ""))
    if a.only in (None, "yardstick", "logwatchd"):
        bench_yardstick(a)
    pf = bench_postfwd(a) if a.only in (None, "postfwd") else None
    if a.only in ("postfwd", "yardstick"):
        return
    if not logwatchd_has_policy():
        print("logwatchd  NOT MEASURED: this tree's logwatchd has no policy service "
              "(`logwatchd --help` lists no --policy-listen; issue 14 not merged yet)")
        return
    with tempfile.TemporaryDirectory(prefix="lw-policybench-") as tmp:
        lw = bench_logwatchd(a, Path(tmp))
    if pf is not None and pf.rate:
        print(f"ratio      logwatchd / postfwd2 requests/s = {lw.rate / pf.rate:.1f}x "
              "(target >= 5x)")


if __name__ == "__main__":
    main()
