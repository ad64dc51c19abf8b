"""Control protocol: the socket server on a real Unix socket, logwatchctl against a real daemon."""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from controlloop import ServedControl
from daemon_harness import DaemonProc, pyenv

from logwatch.cli import ctl
from logwatch.parsing.literalscan import hyperscan_available
from logwatch.services.control import MAX_REQUEST, ControlError, ControlServer, Unavailable, request

# -- the server alone, on a real socket ---------------------------------------------------


@pytest.fixture
def server(tmp_path):
    calls: list[dict] = []

    def handler(req: dict) -> dict:
        calls.append(req)
        if req["cmd"] == "boom":
            raise RuntimeError("kaput")
        if req["cmd"] == "big":
            return {"ok": True, "items": ["x" * 100] * 20000}
        return {"ok": True, "echo": req}

    loop = ServedControl(str(tmp_path / "ctl.sock"), handler)
    loop.calls = calls
    try:
        yield loop
    finally:
        loop.close()


def raw(path: str, data: bytes) -> list[dict]:
    """Send raw bytes, half-close, read every response line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    s.close()
    return [json.loads(line) for line in buf.splitlines()]


def test_socket_is_mode_0600(server):
    mode = stat.S_IMODE(os.stat(server.server.path).st_mode)
    assert mode == 0o600


def test_request_and_response(server):
    resp = request(server.server.path, {"cmd": "ban", "ip": "192.0.2.7", "for": 600})
    assert resp == {"ok": True, "echo": {"cmd": "ban", "ip": "192.0.2.7", "for": 600}}


def test_several_requests_on_one_connection(server):
    out = raw(server.server.path, b'{"cmd":"a"}\n\n{"cmd":"b"}\n{"cmd":"c"}\n')
    assert [r["echo"]["cmd"] for r in out] == ["a", "b", "c"]


@pytest.mark.parametrize("line, words", [
    (b"not json\n", "invalid JSON"),
    (b"[1, 2]\n", '"cmd"'),
    (b'{"ip": "1.2.3.4"}\n', '"cmd"'),
    (b'{"cmd": 5}\n', '"cmd"'),
    (b"\xff\xfe\n", "invalid JSON"),
    # pickle must never be unpickled: it is just invalid JSON here
    (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.\n", "invalid JSON"),
])
def test_bad_requests_get_an_error_and_the_server_survives(server, line, words):
    (resp,) = raw(server.server.path, line)
    assert resp["ok"] is False and words in resp["error"]
    assert request(server.server.path, {"cmd": "status"})["ok"]


def test_handler_exception_is_an_error_response(server):
    resp = request(server.server.path, {"cmd": "boom"})
    assert resp == {"ok": False, "error": "internal error: kaput"}
    assert request(server.server.path, {"cmd": "status"})["ok"]


def test_too_long_request_is_refused(server):
    (resp,) = raw(server.server.path, b"x" * (MAX_REQUEST + 10))
    assert resp == {"ok": False, "error": "request too long"}
    assert request(server.server.path, {"cmd": "status"})["ok"]


def test_large_response_arrives_whole(server):
    resp = request(server.server.path, {"cmd": "big"})
    assert len(resp["items"]) == 20000


def test_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path):
    path = str(tmp_path / "ctl.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)            # bound, never listening: what a crashed daemon leaves behind
    stale.close()
    loop = ServedControl(path, lambda req: {"ok": True})
    try:
        with pytest.raises(ControlError, match="already listening"):
            ControlServer(path, lambda req: {"ok": True}, selectors.DefaultSelector()).start()
        assert request(path, {"cmd": "x"}) == {"ok": True}
    finally:
        loop.close()
    assert not os.path.exists(path)        # close() removes the socket


def test_regular_file_at_the_socket_path_is_left_alone(tmp_path):
    path = tmp_path / "ctl.sock"
    path.write_text("precious\n")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(str(path), lambda req: {"ok": True}, selectors.DefaultSelector()).start()
    assert path.read_text() == "precious\n"


def test_a_client_not_reading_its_answers_is_not_served_further(server):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(server.server.path)
    try:
        s.sendall(b'{"cmd":"big"}\n' * 10)     # 10 answers of 2 MB each, none read yet
        time.sleep(0.3)
        assert len(server.calls) <= 2          # output beyond 1 MiB: requests wait
        buf = b""
        while buf.count(b"\n") < 10:
            buf += s.recv(1 << 20)
        assert all(len(json.loads(line)["items"]) == 20000 for line in buf.splitlines())
        assert len(server.calls) == 10
    finally:
        s.close()


# -- client errors: distinct exit codes ------------------------------------------------------


def test_ctl_missing_socket(tmp_path, capsys):
    rc = ctl.main(["--socket", str(tmp_path / "none.sock"), "status"])
    assert rc == ctl.EXIT_NOT_RUNNING == 3
    assert "is logwatchd running" in capsys.readouterr().err


def test_ctl_refused_socket(tmp_path, capsys):
    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    rc = ctl.main(["--socket", path, "bans"])
    assert rc == ctl.EXIT_NOT_RUNNING
    assert "not running" in capsys.readouterr().err


def test_ctl_not_a_socket(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(Unavailable):
        request(str(path), {"cmd": "status"})


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.needs("root")              # to run a command as nobody
def test_ctl_permission_denied(server, tmp_path):
    # The venv's interpreter may live in root's home; nobody runs the system one on our tree.
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import yaml, logwatch.cli.ctl"], user="nobody",
                               capture_output=True, env=pyenv(), cwd="/", timeout=60)
    except OSError as exc:
        pytest.skip(f"cannot run {SYSTEM_PYTHON} as nobody: {exc}")
    if probe.returncode != 0:
        pytest.skip("nobody cannot run logwatchctl here (system python3 without PyYAML, or "
                    "the source tree is not readable by nobody)")
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-m", "logwatch.cli.ctl", "--socket", server.server.path, "status"],
        capture_output=True, text=True, env=pyenv(), user="nobody", timeout=60,
        cwd="/")
    assert proc.returncode == ctl.EXIT_PERMISSION == 4, proc.stderr
    assert "permission denied" in proc.stderr


# -- logwatchctl against a real daemon ----------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp("ctl")
    d = DaemonProc(base, {"relay": {"grace": 600}, "bans": {"bantime": 900}})
    try:
        d.start()
        yield d
    finally:
        d.stop()


def test_daemon_socket_mode(daemon):
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600


def test_status_json_has_the_promised_keys(daemon):
    proc = daemon.ctl("status", "--json")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    for key in ("lines_read", "events", "grants", "bans", "version", "uptime", "files", "lag",
                "errors", "lines_skipped"):
        assert key in st, key
    assert isinstance(st["events"], dict) and isinstance(st["lines_read"], int)
    assert st["files"][0]["path"] == str(daemon.log)
    # rules.matcher is auto: hyperscan where installed (the test venv has it), else re.
    if hyperscan_available():
        assert st["matcher"] == "hyperscan (1 pass)"
    else:
        assert re.fullmatch(r"re \(\d+ passes\)", st["matcher"]), st["matcher"]


def test_status_table(daemon):
    proc = daemon.ctl("status")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("logwatchd ") and "lines read:" in proc.stdout
    assert "rule matcher:" in proc.stdout
    assert str(daemon.log) in proc.stdout


def test_ban_list_unban(daemon):
    assert daemon.ctl("ban", "198.51.100.7", "--for", "300").returncode == 0
    assert daemon.ctl("ban", "2001:db8:5::1").returncode == 0
    bans = json.loads(daemon.ctl("bans", "--json").stdout)
    by_ip = {b["ip"]: b for b in bans}
    assert set(by_ip) >= {"198.51.100.7/32", "2001:db8:5::/64"}
    b = by_ip["198.51.100.7/32"]
    assert b["expires"] - b["since"] == pytest.approx(300, abs=1)
    v6 = by_ip["2001:db8:5::/64"]
    assert v6["expires"] - v6["since"] == pytest.approx(900, abs=1)   # bans.bantime
    table = daemon.ctl("bans").stdout
    assert table.splitlines()[0].split() == ["IP", "REASON", "SINCE", "EXPIRES"]
    assert "198.51.100.7/32" in table and "manual" in table
    assert daemon.ctl("unban", "198.51.100.7").returncode == 0
    assert "198.51.100.7/32" not in daemon.ctl("bans").stdout
    proc = daemon.ctl("unban", "198.51.100.7")
    assert proc.returncode == 1 and "not banned" in proc.stderr
    assert daemon.ctl("unban", "2001:db8:5::/64").returncode == 0


def test_grant_list_revoke_and_the_map(daemon):
    assert daemon.ctl("grant", "203.0.113.5").returncode == 0
    grants = json.loads(daemon.ctl("grants", "--json").stdout)
    (g,) = [g for g in grants if g["ip"] == "203.0.113.5"]
    assert g["expires"] - g["since"] == pytest.approx(600, abs=1)       # relay.grace
    out = subprocess.run(["postmap", "-q", "203.0.113.5", daemon.map], capture_output=True,
                         text=True, env=daemon.env())
    assert out.stdout.strip() == "OK"
    assert "203.0.113.5" in daemon.ctl("grants").stdout
    assert daemon.ctl("revoke", "203.0.113.5").returncode == 0
    out = subprocess.run(["postmap", "-q", "203.0.113.5", daemon.map], capture_output=True,
                         text=True, env=daemon.env())
    assert out.returncode == 1 and out.stdout == ""
    assert daemon.ctl("revoke", "203.0.113.5").returncode == 1


@pytest.mark.parametrize("args, words", [
    (["ban", "not-an-ip"], "not-an-ip"),
    (["grant", "999.1.1.1"], "999.1.1.1"),
    (["ban", "127.0.0.1"], "whitelisted"),
])
def test_bad_manual_commands_fail_clearly(daemon, args, words):
    proc = daemon.ctl(*args)
    assert proc.returncode == 1
    assert words in proc.stderr


def test_unknown_command_over_the_socket(daemon):
    resp = daemon.req(cmd="explode")
    assert resp == {"ok": False, "error": "unknown command 'explode'"}


def test_reload_and_flush(daemon):
    assert daemon.ctl("reload").returncode == 0
    daemon.ctl("ban", "192.0.2.200")
    proc = daemon.ctl("flush")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(daemon.ctl("bans", "--json").stdout) == []


def test_check_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("relay:\n  grace: 60\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("relay:\n  grace: 60\n  bogus: 1\n")
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "logwatch.cli.ctl", "check-config", *a], capture_output=True,
        text=True, env=pyenv(), timeout=60)
    ok = run(str(good))
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    ko = run(str(bad))
    assert ko.returncode == 1 and f"{bad}:3: relay.bogus: unknown key" in ko.stderr
    # The rules a config points at are checked too.
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "site.yaml").write_text("rules:\n  - id: site-x\n    kind: nope\n")
    with_rules = tmp_path / "rules.yaml"
    with_rules.write_text(f"rules:\n  local_dir: {rules}\n")
    ko = run(str(with_rules))
    assert ko.returncode == 1 and f"{rules / 'site.yaml'}:3: rule 'site-x'" in ko.stderr


def test_example_config_checks_ok(capsys):
    repo = Path(__file__).resolve().parent.parent
    assert ctl._check_config(str(repo / "etc" / "logwatchd.yaml")) == 0, capsys.readouterr().err


def test_deeply_nested_json_does_not_kill_the_daemon(daemon):
    (resp,) = raw(daemon.socket, b"[" * 60000 + b"\n")
    assert resp["ok"] is False and "invalid JSON" in resp["error"]
    assert daemon.req(cmd="status")["ok"]


def test_ctl_takes_the_socket_from_the_config(daemon, tmp_path):
    cfg = tmp_path / "lw.yaml"
    cfg.write_text(f"daemon:\n  socket: {daemon.socket}\n")
    proc = subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "--config", str(cfg), "bans"],
                          capture_output=True, text=True, env=pyenv(), timeout=60)
    assert proc.returncode == 0, proc.stderr
