"""Installed artefacts tested from their installed files: the .deb end to end, and a wheel.

The .deb goes into a throwaway root (tests/pkgroot.py) with dpkg -i; tests/installed_e2e.py
then runs /usr/sbin/logwatchd on Debian's python3 in a fresh network namespace, with a temp
log, a temp hash map and a private iptables chain, and checks with postmap and iptables; the
package is purged afterwards. Without overlayfs it goes onto the machine itself, only when
no trace of logwatchd is there, and is purged even when a check fails.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from installed_e2e import CHAIN, GUESSER_IP, LOGIN_IP
from needs import require, unavailable
from pkgroot import REPO, Step, clean_env, copy_tree, in_throwaway_root, overlay_works

import logwatch

DRIVER = Path(__file__).resolve().parent / "installed_e2e.py"
# Appended line -> grant on stderr: the median of a few samples, a loose bound that one
# second of polling fails. Figures: bench/deb_latency_bench.py.
READ_BOUND = 0.100
TRACES = ("/usr/sbin/logwatchd", "/etc/logwatchd", "/var/lib/logwatchd",
          "/usr/lib/python3/dist-packages/logwatch")


def run_installed(deb: Path, base: Path, samples: int = 5, dry_run: bool = False) -> dict:
    """dpkg -i the .deb, run the driver in a new network namespace, purge; its JSON result."""
    driver = ["unshare", "--net", "/usr/bin/python3", "/tmp/installed_e2e.py",
              "--samples", str(samples)] + (["--dry-run"] if dry_run else [])
    if overlay_works(base / "probe"):
        inside = f"/tmp/{deb.name}"
        steps = [["dpkg", "--purge", "logwatchd"],
                 ["rm", "-rf", "/etc/logwatchd", "/opt/logwatchd", "/usr/sbin/logwatchd",
                  "/usr/sbin/logwatchctl"],
                 ["dpkg", "-i", inside], driver, ["dpkg", "--purge", "logwatchd"]]
        res = in_throwaway_root(base / "root", steps,
                                [(str(deb), inside), (str(DRIVER), "/tmp/installed_e2e.py")])
    else:
        res = _run_on_host(deb, driver)
    for r in res[:3]:
        assert r.rc == 0, r.explain()
    assert res[3].rc == 0, res[3].explain()
    return json.loads(res[3].out)


def _run_on_host(deb: Path, driver: list[str]) -> list[Step]:
    traces = [p for p in TRACES if os.path.lexists(p)]
    if traces:
        unavailable(f"no overlayfs here, and {traces} exist: not installing over them")
    env = clean_env()
    driver = driver[:3] + [str(DRIVER)] + driver[4:]
    out: list[Step] = [Step(["true"], 0, "", ""), Step(["true"], 0, "", "")]
    try:
        for argv in (["dpkg", "-i", str(deb)], driver):
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300,
                               stdin=subprocess.DEVNULL)
            out.append(Step(argv, p.returncode, p.stdout, p.stderr))
    finally:
        subprocess.run(["dpkg", "--purge", "logwatchd"], env=env, capture_output=True,
                       timeout=300)
    return out


@pytest.fixture(scope="module")
def installed_run(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    require("root", "unshare", "ip", "iptables", "postmap")
    result = run_installed(deb, tmp_path_factory.mktemp("installed"))
    assert result["started"], f"installed logwatchd did not start:\n{result['stderr']}"
    return result


def test_installed_deb_grants_relay_after_a_dovecot_pop3_login(installed_run: dict) -> None:
    assert installed_run["postmap_q"] == {"rc": 0, "out": "OK"}, installed_run["stderr"]


def test_installed_deb_bans_a_user_unknown_guesser(installed_run: dict) -> None:
    rules = installed_run["iptables_S"].splitlines()
    drops = [r for r in rules if f"-s {GUESSER_IP}/32" in r and r.endswith("-j DROP")]
    assert drops and all(r.startswith(f"-A {CHAIN} ") for r in drops), \
        f"{rules}\n{installed_run['stderr']}"
    # Only the guesser: the POP3 client was granted, not banned.
    assert not any(LOGIN_IP in r for r in rules)


def test_installed_deb_reads_an_appended_line_within_100ms(installed_run: dict) -> None:
    """inotify, not a one-second poll: the median append -> grant stays under 100 ms."""
    seen = installed_run["latency"]
    assert None not in seen, f"an appended line was never acted on: {seen}\n" \
        + installed_run["stderr"]
    assert statistics.median(seen) < READ_BOUND, \
        f"append -> grant took {[round(s * 1000, 1) for s in seen]} ms (polling?)"


def test_installed_deb_stops_cleanly_on_sigterm(installed_run: dict) -> None:
    assert installed_run["exit"] == 0, installed_run["stderr"]
    assert "action=stopped " in installed_run["stderr"]


SMALL_LOG = (
    "Nov 21 12:00:00 mail pop3d: LOGIN, user=alice, ip=[::ffff:192.0.2.1], port=[40512], "
    "protocol=POP3\n"
    + "".join(f"Nov 21 12:00:0{n} mx postfix/smtpd[99]: NOQUEUE: reject: RCPT from "
              f"unknown[{GUESSER_IP}]: 550 5.1.1 <u{n}@example.org>: Recipient address "
              f"rejected: User unknown in local recipient table; from=<x@example.net> "
              f"to=<u{n}@example.org> proto=ESMTP helo=<h>\n" for n in range(3))
    + "Nov 21 12:00:09 mx postfix/qmgr[77]: 4A1B2C: removed\n")


def test_wheel_in_a_clean_venv_finds_the_shipped_rules(tmp_path: Path) -> None:
    """pip wheel . -> a fresh venv on /usr/bin/python3 -> logwatchctl test-rules on a log."""
    require("pip", "wheel", "ensurepip")
    src = copy_tree(tmp_path / "src")
    env = dict(clean_env(), PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")

    def sh(*argv: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"{argv} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    # Offline and with Debian's setuptools, as the .deb build does.
    sh("/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
       "-w", str(tmp_path / "dist"), ".", cwd=src)
    wheels = list((tmp_path / "dist").glob("logwatchd-*.whl"))
    assert len(wheels) == 1, wheels
    shutil.rmtree(src)     # nothing may come from the source tree any more
    venv = tmp_path / "venv"
    # Like `make install`: Debian's python3, its PyYAML/netaddr/psutil through system
    # site-packages; --no-index: only this wheel comes in.
    sh("/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv))
    sh(str(venv / "bin/pip"), "install", "--no-deps", "--no-index", str(wheels[0]))
    where = sh(str(venv / "bin/python"), "-c",
               "import logwatch.parsing.rules as r; print(r.default_rules_dirs()[0])").stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("/logwatch/shipped-rules"), where
    shipped = sorted(p.name for p in Path(where).glob("*.yaml"))
    assert shipped == sorted(p.name for p in (REPO / "rules").glob("*.yaml"))
    (tmp_path / "small.log").write_text(SMALL_LOG)
    out = sh(str(venv / "bin/logwatchctl"), "test-rules", "small.log").stdout
    assert f"from {len(shipped)} files" in out, out
    assert "courier-login" in out and "Events:       4" in out, out
    version = sh(str(venv / "bin/logwatchd"), "--version")
    assert logwatch.__version__ in version.stdout + version.stderr
