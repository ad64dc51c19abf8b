"""The Debian package and `make install`: build, inspect, install into a throwaway root, run.

The throwaway roots are explained in tests/pkgroot.py; the .deb is built once per session
(the `deb` fixture in conftest.py). Without overlay support the .deb goes onto the machine
itself, only if nothing of logwatchd is there yet, and is purged afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from needs import require
from pkgroot import REPO, SKIP_COPY, clean_env, in_throwaway_root, overlay_works

import logwatch

VERSION = logwatch.__version__


@pytest.fixture(scope="module")
def contents(deb: Path) -> set[str]:
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    # Last field is the path ("./usr/sbin/logwatchd"); symlinks add "-> target".
    paths = set()
    for line in out.splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        paths.add(name[1:].rstrip("/") or "/")
    return paths


def test_deb_file_name_carries_the_package_version(deb: Path) -> None:
    assert deb.name == f"logwatchd_{VERSION}_all.deb"


def test_deb_contents(contents: set[str]) -> None:
    expected = {
        "/usr/sbin/logwatchd", "/usr/sbin/logwatchctl",
        "/usr/lib/python3/dist-packages/logwatch/__init__.py",
        "/usr/lib/python3/dist-packages/logwatch/daemon/sdnotify.py",
        "/usr/lib/python3/dist-packages/logwatch/daemon/app.py",
        "/usr/lib/python3/dist-packages/logwatch/cli/ctl.py",
        "/etc/logwatchd/logwatchd.yaml", "/etc/logwatchd/whitelist", "/etc/logwatchd/rules.d",
        "/etc/logrotate.d/logwatchd",
        "/lib/systemd/system/logwatchd.service",
        "/usr/share/man/man8/logwatchd.8.gz", "/usr/share/man/man8/logwatchctl.8.gz",
        "/usr/share/doc/logwatchd/inittab.example",
        "/var/lib/logwatchd", "/var/log/logwatchd",
    }
    assert expected <= contents, f"missing from the .deb: {sorted(expected - contents)}"
    # The status page's assets are package data: the page must work offline (no CDN).
    for asset in (REPO / "logwatch" / "web" / "static").iterdir():
        assert f"/usr/lib/python3/dist-packages/logwatch/web/static/{asset.name}" in contents
    # Every module of the source tree and every rule file is shipped.
    for py in (REPO / "logwatch").rglob("*.py"):
        rel = py.relative_to(REPO).as_posix()
        assert f"/usr/lib/python3/dist-packages/{rel}" in contents, rel
    rules = sorted(p.name for p in (REPO / "rules").glob("*.yaml"))
    assert rules, "rules/*.yaml is empty in the source tree"
    shipped = sorted(p.rsplit("/", 1)[1] for p in contents
                     if re.fullmatch(r"/usr/share/logwatchd/rules/[^/]+\.yaml", p))
    assert shipped == rules
    # ... and inside the package too, where importlib.resources finds them (wheel or .deb).
    packaged = sorted(p.rsplit("/", 1)[1] for p in contents if re.fullmatch(
        r"/usr/lib/python3/dist-packages/logwatch/shipped-rules/[^/]+\.yaml", p))
    assert packaged == rules
    # Nothing of the test suite or the build leaks into the package.
    leaked = [p for p in contents if "/tests/" in p or "__pycache__" in p or p.endswith(".pyc")]
    assert not leaked, leaked


def test_deb_control_and_conffiles(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")], check=True)
    conffiles = (tmp_path / "DEBIAN" / "conffiles").read_text().split()
    assert {"/etc/logwatchd/logwatchd.yaml", "/etc/logwatchd/whitelist",
            "/etc/logrotate.d/logwatchd"} <= set(conffiles)
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture",
                             "Depends", "Recommends", "Description"],
                            capture_output=True, text=True, check=True).stdout
    info = dict(line.split(": ", 1) for line in fields.splitlines() if not line.startswith(" "))
    assert info["Package"] == "logwatchd"
    assert info["Version"] == VERSION
    assert info["Architecture"] == "all"
    depends = {d.strip().split()[0] for d in info["Depends"].split(",")}
    assert {"python3-yaml", "python3-netaddr", "python3-psutil",
            "python3-prometheus-client"} <= depends
    # Debian 12 has no python3-inotify-simple: depending on it would make the .deb uninstallable.
    assert not any("inotify" in d for d in depends), depends
    # What the default config drives: postmap, a firewall tool, a syslog writing mail.log.
    recommends = {alt.strip().split()[0] for d in info["Recommends"].split(",")
                  for alt in d.split("|")}
    assert {"postfix", "iptables", "nftables", "ipset", "rsyslog"} <= recommends, recommends
    # inotify is built in: the description no longer explains a polling fallback.
    assert "inotify" not in fields, fields
    postrm = (tmp_path / "DEBIAN" / "postrm").read_text()
    assert "rm -rf /var/lib/logwatchd" in postrm


def test_deb_installs_runs_and_purges(deb: Path, tmp_path: Path) -> None:
    """dpkg -i, the commands from the package, the unit, then a clean purge."""
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root")
    if overlay_works(tmp_path / "probe"):
        _install_in_overlay(deb, tmp_path / "root")
    else:
        _install_on_host(deb)


def _install_in_overlay(deb: Path, base: Path) -> None:
    inside = f"/tmp/{deb.name}"
    conf = "/etc/logwatchd/logwatchd.yaml"
    steps = [
        # The overlay starts as a copy of this machine: drop any logwatchd it may have.
        ["dpkg", "--purge", "logwatchd"],
        ["rm", "-rf", "/etc/logwatchd", "/opt/logwatchd", "/usr/sbin/logwatchd",
         "/usr/sbin/logwatchctl"],
        ["dpkg", "-i", inside],
        ["dpkg-query", "-W", "-f=${Status} ${Version}", "logwatchd"],
        ["/usr/sbin/logwatchd", "--version"],
        ["/usr/sbin/logwatchctl", "--version"],
        ["/usr/sbin/logwatchctl", "check-config", conf],
        # The system python3, not a venv: the package must run on Debian's modules alone.
        ["/usr/bin/python3", "-c", "import logwatch, sys; print(logwatch.__file__)"],
        ["systemd-analyze", "verify", "/lib/systemd/system/logwatchd.service"],
        ["logrotate", "--debug", "/etc/logrotate.d/logwatchd"],
        ["test", "-L", "/etc/systemd/system/multi-user.target.wants/logwatchd.service"],
        ["dpkg", "--purge", "logwatchd"],
        ["test", "!", "-e", "/usr/sbin/logwatchd"],
        ["test", "!", "-e", conf],
        ["test", "!", "-e", "/var/lib/logwatchd"],
        ["test", "!", "-e", "/etc/systemd/system/multi-user.target.wants/logwatchd.service"],
    ]
    res = in_throwaway_root(base, steps, [(str(deb), inside)])
    by_name = {" ".join(r.argv): r for r in res}
    for r in res:
        assert r.rc == 0, r.explain()
    assert by_name["dpkg-query -W -f=${Status} ${Version} logwatchd"].out == \
        f"install ok installed {VERSION}"
    assert VERSION in by_name["/usr/sbin/logwatchd --version"].out + \
        by_name["/usr/sbin/logwatchd --version"].err
    assert by_name[f"/usr/sbin/logwatchctl check-config {conf}"].out.strip() == f"{conf}: OK"
    # verify exits 0 on unknown or misspelt keys; it only warns about them.
    verify = by_name["systemd-analyze verify /lib/systemd/system/logwatchd.service"]
    assert verify.err == "", verify.explain()
    assert by_name["/usr/bin/python3 -c import logwatch, sys; print(logwatch.__file__)"].out \
        .startswith("/usr/lib/python3/dist-packages/logwatch/")


def _install_on_host(deb: Path) -> None:
    """Fallback without overlayfs: only on a machine with no trace of logwatchd."""
    traces = [p for p in ("/usr/sbin/logwatchd", "/etc/logwatchd", "/var/lib/logwatchd")
              if os.path.lexists(p)]
    if traces:
        pytest.skip(f"no overlayfs here, and {traces} exist: not installing over them")
    env = clean_env()
    try:
        subprocess.run(["dpkg", "-i", str(deb)], check=True, env=env, capture_output=True)
        ver = subprocess.run(["/usr/sbin/logwatchd", "--version"], env=env,
                             capture_output=True, text=True)
        assert ver.returncode == 0 and VERSION in ver.stdout + ver.stderr
        chk = subprocess.run(["/usr/sbin/logwatchctl", "check-config",
                              "/etc/logwatchd/logwatchd.yaml"], env=env, capture_output=True,
                             text=True)
        assert chk.returncode == 0, chk.stderr
    finally:
        subprocess.run(["dpkg", "--purge", "logwatchd"], env=env, capture_output=True)
    assert not os.path.exists("/etc/logwatchd")


def test_make_install_in_throwaway_root(tmp_path: Path) -> None:
    """`make install` (the README's first command runs it) installs a working daemon."""
    if not overlay_works(tmp_path / "probe"):
        pytest.skip("needs root and overlayfs for a throwaway root")
    require("make")
    conf = "/etc/logwatchd/logwatchd.yaml"
    make = ["make", "-C", "/tmp/src", "install"]
    # `make run` ends in this command: it must keep running on the installed default
    # config until SIGTERM, then stop. A fresh network namespace keeps the firewall
    # changes away from this machine. 124: still running at the timeout, and stopped
    # within the 5 s grace (a needed SIGKILL gives 137, an early exit its own status).
    # Postfix's tools need an interface that is up, hence lo up in the new namespace.
    lo_up = ("import os, subprocess, sys; subprocess.run(['ip', 'link', 'set', 'lo', 'up'], "
             "check=True); os.execvp(sys.argv[1], sys.argv[1:])")
    run = ["unshare", "--net", "/usr/bin/python3", "-c", lo_up,
           "timeout", "-k", "5", "-s", "TERM", "4",
           "/usr/sbin/logwatchd", "--foreground", "--log", "stderr"]
    steps = [
        ["dpkg", "--purge", "logwatchd"],
        ["rm", "-rf", "/etc/logwatchd", "/opt/logwatchd"],
        # What a fresh `make deps-run` leaves (Postfix preseeded "Local only"): a main.cf.
        ["cp", "-n", "/usr/share/postfix/main.cf.debian", "/etc/postfix/main.cf"],
        make,
        ["/usr/sbin/logwatchd", "--version"],
        ["/usr/sbin/logwatchctl", "check-config", conf],
        run,
        ["test", "-f", "/usr/local/lib/systemd/system/logwatchd.service"],
        ["test", "-d", "/var/lib/logwatchd"],
        ["test", "-d", "/var/log/logwatchd"],
        ["logrotate", "--debug", "/etc/logrotate.d/logwatchd"],
        # An admin's edit survives a second install.
        ["/usr/bin/python3", "-c",
         f"open({conf!r}, 'a').write('# local edit\\n')"],
        make,
        ["grep", "-c", "# local edit", conf],
    ]
    for rule in (REPO / "rules").glob("*.yaml"):
        steps.append(["test", "-f", f"/usr/share/logwatchd/rules/{rule.name}"])
    # uninstall removes the program and keeps the admin's configuration and state.
    steps += [
        ["make", "-C", "/tmp/src", "uninstall"],
        ["test", "!", "-e", "/usr/sbin/logwatchd"],
        ["test", "!", "-e", "/opt/logwatchd"],
        ["test", "!", "-e", "/usr/local/lib/systemd/system/logwatchd.service"],
        ["test", "-f", conf],
        ["test", "-f", "/etc/logrotate.d/logwatchd"],    # configuration too (issue 11.5f)
        ["test", "-d", "/var/lib/logwatchd"],
    ]
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP_COPY, symlinks=True)
    res = in_throwaway_root(tmp_path / "root", steps,
                            [(str(src), "/tmp/src"), ("/etc/resolv.conf", "/etc/resolv.conf")])
    for r in res:
        assert r.rc == (124 if r.argv == run else 0), r.explain()
    version = res[steps.index(["/usr/sbin/logwatchd", "--version"])]
    assert VERSION in version.out + version.err
    assert res[steps.index(["grep", "-c", "# local edit", conf])].out.strip() == "1"


def test_unit_file_settings() -> None:
    """The unit keeps the settings the daemon and the README rely on."""
    text = (REPO / "logwatchd.service").read_text()
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    one = {k: v[-1] for k, v in settings.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) > 0
    assert one["Restart"] == "on-failure"
    assert one["ExecStart"] == \
        "/usr/sbin/logwatchd --foreground --config /etc/logwatchd/logwatchd.yaml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["RuntimeDirectory"] == "logwatchd"
    assert one["StateDirectory"] == "logwatchd"
    assert one["LogsDirectory"] == "logwatchd"
    caps = set(one["CapabilityBoundingSet"].split())
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_KILL"} <= caps
    assert "CAP_SYS_ADMIN" not in caps
    assert "-/etc/postfix" in one["ReadWritePaths"].split()
    assert one["ProtectSystem"] == "strict"
    assert set(one["RestrictAddressFamilies"].split()) == \
        {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
    assert (REPO / "debian" / "logwatchd.service").resolve() == \
        (REPO / "logwatchd.service").resolve()


def test_inittab_example_line() -> None:
    lines = (REPO / "inittab.example").read_text().splitlines()
    entries = [ln for ln in lines if ln and not ln.startswith("#")]
    assert entries == ["LWD:2345:respawn:/usr/sbin/logwatchd --config /etc/logwatchd/logwatchd.yaml"]


@pytest.mark.parametrize("page", ["logwatchd.8", "logwatchctl.8"])
def test_man_pages_render_without_warnings(page: str) -> None:
    require("groff")
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(REPO / "man" / page)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    title = next(ln for ln in (REPO / "man" / page).read_text().splitlines()
                 if ln.startswith(".TH "))
    assert f'"logwatchd {VERSION}"' in title, f"{page}: bump the version in {title!r}"


def test_man_page_lists_every_daemon_option() -> None:
    """Each long option of `logwatchd --help` is documented in logwatchd(8)."""
    code = "from logwatch.daemon.app import main; main(['--help'])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"logwatchd --help failed: {proc.stderr}")
    options = set(re.findall(r"(--[a-z][a-z-]+)", proc.stdout)) - {"--help"}
    assert "--config" in options
    page = (REPO / "man" / "logwatchd.8").read_text().replace("\\-", "-")
    # "--log" must not pass because "--logfile" is documented.
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![a-z-])", page))
    assert not missing, f"options missing from man/logwatchd.8: {missing}"
