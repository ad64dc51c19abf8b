"""logwatchctl against a real daemon: durations, refused targets, offenders, check IP,
check-config on the whitelist, and output into a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from daemon_harness import DaemonProc, pyenv

WHITELIST = "# office\n192.0.2.0/24\n\n2001:db8:77::/48   # backup MX\n"


def unknown_user(ip: str, user: str) -> str:
    now = datetime.now()
    return (f"{now:%b} {now.day:2d} {now:%H:%M:%S} mx postfix/smtpd[2345]: NOQUEUE: reject: "
            f"RCPT from unknown[{ip}]: 550 5.1.1 <{user}@example.org>: Recipient address "
            f"rejected: User unknown in local recipient table; from=<spam@example.net> "
            f"to=<{user}@example.org> proto=ESMTP helo=<guess>")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp("ctlcmd")
    (base / "whitelist").write_text(WHITELIST)
    d = DaemonProc(base, {"relay": {"grace": 600, "mynetworks": ["10.9.0.0/16"]},
                          "bans": {"bantime": 900, "maxretry": 5}})
    try:
        d.start()
        yield d
    finally:
        d.stop()


def bans(d: DaemonProc) -> dict[str, dict]:
    return {b["ip"]: b for b in json.loads(d.ctl("bans", "--json").stdout)}


def grants(d: DaemonProc) -> dict[str, dict]:
    return {g["ip"]: g for g in json.loads(d.ctl("grants", "--json").stdout)}


# -- durations ---------------------------------------------------------------------------


def test_ban_and_grant_take_the_readme_form_address_duration(daemon):
    proc = daemon.ctl("ban", "198.51.100.8", "10m")
    assert proc.returncode == 0, proc.stderr
    b = bans(daemon)["198.51.100.8/32"]
    assert b["expires"] - b["since"] == pytest.approx(600, abs=1)
    assert daemon.ctl("grant", "203.0.113.6", "1h").returncode == 0
    g = grants(daemon)["203.0.113.6"]
    assert g["expires"] - g["since"] == pytest.approx(3600, abs=1)
    assert daemon.ctl("ban", "198.51.100.9", "--for", "2d").returncode == 0
    b = bans(daemon)["198.51.100.9/32"]
    assert b["expires"] - b["since"] == pytest.approx(2 * 86400, abs=1)
    for cmd, ip in (("unban", "198.51.100.8"), ("unban", "198.51.100.9"), ("revoke", "203.0.113.6")):
        assert daemon.ctl(cmd, ip).returncode == 0


@pytest.mark.parametrize("args, words", [
    (["ban", "198.51.100.10", "5", "--for", "5"], "once"),
    (["ban", "198.51.100.10", "--for", "-5"], "greater than 0"),
    (["ban", "198.51.100.10", "1e308"], "unit"),
    (["grant", "198.51.100.10", "--for", "3651d"], "ten years"),
    (["grant", "198.51.100.10", "10x"], "unit"),
])
def test_bad_durations_are_usage_errors(daemon, args, words):
    proc = daemon.ctl(*args)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert "198.51.100.10/32" not in bans(daemon) and "198.51.100.10" not in grants(daemon)


@pytest.mark.parametrize("cmd", ["ban", "grant"])
def test_huge_durations_over_the_socket_are_refused_and_listings_keep_working(daemon, cmd):
    # 1e308 s used to be accepted; every later `bans`/`grants` then died with OverflowError.
    resp = daemon.req(cmd=cmd, ip="198.51.100.11", **{"for": 1e308})
    assert resp["ok"] is False and "ten years" in resp["error"], resp
    resp = daemon.req(cmd=cmd, ip="198.51.100.11", **{"for": "1h"})
    assert resp["ok"] is True, resp
    for listing in ("bans", "grants"):
        proc = daemon.ctl(listing)
        assert proc.returncode == 0, proc.stderr
    daemon.req(cmd="unban" if cmd == "ban" else "revoke", ip="198.51.100.11")


# -- refused targets ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["10.0.0.0/0", "0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"])
def test_ban_of_a_slash_zero_names_the_real_reason(daemon, target):
    proc = daemon.ctl("ban", target)
    assert proc.returncode == 1
    assert "whole Internet" in proc.stderr and "whitelisted" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("target, words", [
    ("10.0.0.0/7", "wider than /8"), ("2001:db8::/15", "wider than /16"),
    ("198.51.100.7/24", "host bits"),
    ("0.0.0.0", "unspecified"), ("255.255.255.255", "broadcast"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("::", "unspecified"), ("240.0.0.1", "reserved"),
])
def test_ban_refuses_what_is_not_a_client(daemon, target, words):
    proc = daemon.ctl("ban", target)
    assert proc.returncode == 1 and words in proc.stderr, proc.stderr
    assert bans(daemon) == {}


@pytest.mark.parametrize("target, words", [
    ("0.0.0.0", "unspecified"), ("255.255.255.255", "broadcast"), ("224.0.0.5", "multicast"),
    ("::", "unspecified"), ("ff02::1", "multicast"), ("127.0.0.1", "loopback"),
    ("::1", "loopback"), ("::ffff:127.0.0.2", "loopback"), ("250.1.2.3", "reserved"),
])
def test_grant_refuses_what_is_not_a_client(daemon, target, words):
    proc = daemon.ctl("grant", target)
    assert proc.returncode == 1 and words in proc.stderr, proc.stderr
    assert grants(daemon) == {}


# -- offenders and check ------------------------------------------------------------------


def wait_score(d: DaemonProc, ip: str, score: float, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = d.req(cmd="check", ip=ip)
        if v["ok"] and v["offender"] and v["offender"]["score"] >= score:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{ip} never reached score {score}: {v}")


def test_offenders_lists_scores_not_yet_banned(daemon):
    daemon.append(*(unknown_user("203.0.113.50", f"u{i}") for i in range(3)),
                  unknown_user("203.0.113.51", "x"),
                  *(unknown_user("203.0.113.52", f"v{i}") for i in range(5)))
    wait_score(daemon, "203.0.113.51", 1)
    offenders = json.loads(daemon.ctl("offenders", "--json").stdout)
    by_ip = {o["ip"]: o for o in offenders}
    assert "203.0.113.52/32" not in by_ip            # banned: no longer an offender
    assert "203.0.113.52/32" in bans(daemon)
    o = by_ip["203.0.113.50/32"]
    assert (o["score"], o["threshold"], o["reasons"]) == (3, 5, {"user-unknown": 3})
    assert o["distinct_users"] == 3 and o["distinct_threshold"] == 10
    # The score drops when the oldest event leaves the 600 s window.
    assert o["decays_at"] == pytest.approx(time.time() + 600, abs=15)
    assert [x["ip"] for x in offenders][:2] == ["203.0.113.50/32", "203.0.113.51/32"]
    table = daemon.ctl("offenders").stdout
    assert table.splitlines()[0].split()[:3] == ["IP", "SCORE", "REASONS"]
    assert "203.0.113.50/32  3/5" in table and "user-unknown:3" in table
    limited = daemon.req(cmd="offenders", limit=1)
    assert len(limited["offenders"]) == 1 and limited["total"] >= 2
    everyone = json.loads(daemon.ctl("offenders", "--limit", "0", "--json").stdout)
    assert len(everyone) == limited["total"]
    assert daemon.req(cmd="offenders", limit=0)["ok"] is False
    daemon.ctl("unban", "203.0.113.52")


def test_check_a_scored_address(daemon):
    daemon.append(unknown_user("203.0.113.60", "a"), unknown_user("203.0.113.60", "b"))
    v = wait_score(daemon, "203.0.113.60", 2)
    assert v["whitelisted"] is False and v["banned"] is False and v["granted"] is False
    assert v["offender"]["score"] == 2
    out = daemon.ctl("check", "203.0.113.60").stdout
    assert "score:         2 of 5 (user-unknown:2)" in out and "banned:        no" in out


def test_check_names_the_whitelist_file_and_line(daemon):
    v = json.loads(daemon.ctl("check", "192.0.2.44", "--json").stdout)
    assert v["whitelisted"] is True and v["protected"] is True
    assert v["protected_by"] == [{"what": "whitelist", "entry": "192.0.2.0/24",
                                  "file": str(daemon.base / "whitelist"), "line": 2}]
    out = daemon.ctl("check", "2001:db8:77:1::5").stdout
    assert f"2001:db8:77::/48 ({daemon.base / 'whitelist'}:4)" in out


def test_check_mynetworks_loopback_grant_and_ban(daemon):
    v = daemon.req(cmd="check", ip="10.9.1.2")
    assert v["protected_by"] == [{"what": "mynetworks", "entry": "10.9.0.0/16"}]
    assert v["never_granted_by"] == [{"what": "mynetworks", "entry": "10.9.0.0/16"}]
    v = daemon.req(cmd="check", ip="127.0.0.1")
    assert {"what": "loopback", "entry": "127.0.0.0/8", "file": "built-in", "line": None} \
        in v["protected_by"]
    assert daemon.ctl("grant", "203.0.113.70").returncode == 0
    assert daemon.ctl("ban", "198.51.100.0/24").returncode == 0
    try:
        v = daemon.req(cmd="check", ip="203.0.113.70")
        assert v["granted"] and v["grant"]["service"] == "manual"
        v = daemon.req(cmd="check", ip="198.51.100.77")
        assert v["banned"] and v["ban"]["ip"] == "198.51.100.0/24" and v["ban"]["source"] == "manual"
        out = daemon.ctl("check", "198.51.100.77").stdout
        assert "banned:        yes, 198.51.100.0/24 until" in out
    finally:
        daemon.ctl("revoke", "203.0.113.70")
        daemon.ctl("unban", "198.51.100.0/24")
    proc = daemon.ctl("check", "not-an-ip")
    assert proc.returncode == 1 and "not an IP address" in proc.stderr


# -- check-config and pipes ---------------------------------------------------------------


def test_check_config_checks_the_whitelist(tmp_path):
    wl = tmp_path / "whitelist"
    cfg = tmp_path / "lw.yaml"
    cfg.write_text(f"bans:\n  whitelist: {wl}\n")
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "logwatch.cli.ctl", "check-config", str(cfg)], capture_output=True,
        text=True, env=pyenv(), timeout=60)
    wl.write_text("192.0.2.0/24\n10/8\n1.2.3   # a typo\n")
    proc = run()
    assert proc.returncode == 1, proc.stdout
    assert f"{wl}:2: bad entry '10/8'" in proc.stderr
    assert f"{wl}:3: bad entry '1.2.3'" in proc.stderr
    wl.write_text("192.0.2.0/24\n10.0.0.0/8\n")
    proc = run()
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
    wl.unlink()         # a missing whitelist is allowed (loopback only), and said
    proc = run()
    assert proc.returncode == 0 and "not found" in proc.stderr


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path):
    log = tmp_path / "mail.log"
    log.write_text("".join(unknown_user(f"203.0.113.{i % 250}", f"user{i}") + "\n"
                           for i in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "logwatch.cli.ctl", "parse", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pyenv())
    assert proc.stdout.readline()       # like `| head -1`: one line, then the reader leaves
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert "Broken pipe" not in err and "Traceback" not in err and err == "", err


def test_status_text_shows_the_guards_that_fired() -> None:
    """Skipped long lines, quarantined rules and log-time corrections are in the text form too
    (not only in --json), and absent while nothing fired."""
    from logwatch.cli.ctl import format_status

    text = format_status({"lines_too_long": 2, "rules_over_budget": 1, "rules_quarantined": 1,
                          "log_time": {"future": 3, "stale_logins": 0}})
    assert "guards:        too long=2, rules over budget=1, rules quarantined=1, " \
           "log time future=3" in text
    assert "guards:" not in format_status({"lines_too_long": 0, "log_time": {"future": 0}})
