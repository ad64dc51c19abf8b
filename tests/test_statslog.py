"""The stats log (daemon/statslog.py): smtpauth-manager's labels, escaping that no address can
forge a field or a line with, the last seq found again after a kill (a torn line cut off) and
after a rotation by real logrotate with the shipped configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from logwatch.daemon.statslog import StatsLog, escape, format_record, parse_line, unescape
from logwatch.engine.messages import MessageRecord, Recipient

REPO = Path(__file__).resolve().parents[1]
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
T = 1795305600.0


def record(seq: int, sender: str = "alice@example.org",
           rcpts: tuple[str, ...] = ("bob@example.com", "carol@example.net")) -> MessageRecord:
    return MessageRecord(
        host="mx1", queue_id=f"Q{seq:05d}", client_ip="192.0.2.10",
        client_name="laptop.example.org", sasl_user="alice", sasl_method="PLAIN",
        sender=sender, recipients=tuple(Recipient(r, "sent", "2.0.0", "mx", "") for r in rcpts),
        size=1234, nrcpt=len(rcpts), message_id="<m@x>", connect_time=T, eom_time=T + 1,
        done_time=T + 2, outcome="delivered", seq=seq)


def test_a_line_has_smtpauth_managers_labels() -> None:
    line = format_record(record(7))
    assert line.endswith("\n") and line.count("\n") == 1
    pairs = parse_line(line)
    labels = [label for label, _ in pairs]
    for label in ("seq", "client", "auth_id", "sender", "recipient", "connect_time",
                  "eom_time", "queue_id", "size", "recipient_status"):
        assert label in labels, label
    values = dict(pairs)
    assert [v for k, v in pairs if k == "recipient"] == ["bob@example.com", "carol@example.net"]
    assert [v for k, v in pairs if k == "recipient_status"] == ["bob@example.com=sent",
                                                               "carol@example.net=sent"]
    assert values["auth_id"] == "alice" and values["seq"] == "7"
    assert len(values["connect_time"]) == 19 and values["connect_time"][4] == "-"


def test_no_auth_id_is_an_empty_value() -> None:
    r = record(1)
    r = MessageRecord(**{**r.__dict__, "sasl_user": "", "connect_time": 0.0})
    values = dict(parse_line(format_record(r)))
    assert values["auth_id"] == "" and values["connect_time"] == ""


@pytest.mark.parametrize("evil", [
    "a\tauth_id:victim@example.org",
    "a\nseq:999\tauth_id:victim",
    "a\\tb\\\\", "a\r\x00\x1b[31m\x7f\x85\u2028\u2029b",
])
def test_escaping_keeps_a_hostile_address_in_its_field(evil: str) -> None:
    line = format_record(record(3, sender=evil, rcpts=(evil,)))
    assert line.count("\n") == 1 and "\r" not in line and "\u2028" not in line
    assert len(line.splitlines()) == 1
    pairs = parse_line(line)
    assert [k for k, _ in pairs].count("auth_id") == 1
    assert dict(pairs)["sender"] == evil and dict(pairs)["auth_id"] == "alice"
    assert [v for k, v in pairs if k == "recipient"] == [evil]
    assert unescape(escape(evil)) == evil


def test_last_seq_and_a_torn_last_line(tmp_path: Path) -> None:
    log = StatsLog(str(tmp_path / "stats.log"))
    assert log.last_seq() == 0
    log.write([record(1), record(2)])
    assert log.last_seq() == 2
    with open(tmp_path / "stats.log", "ab") as fh:       # a kill in the middle of a write
        fh.write(format_record(record(3)).encode()[:40])
    assert log.last_seq() == 2
    assert (tmp_path / "stats.log").read_text().endswith("\n")
    log.write([record(3)])
    seqs = [dict(parse_line(x))["seq"] for x in (tmp_path / "stats.log").read_text().splitlines()]
    assert seqs == ["1", "2", "3"]
    assert oct(os.stat(tmp_path / "stats.log").st_mode & 0o777) == "0o640"


def shipped_stanza(path: Path, method: str) -> str:
    """The shipped logrotate stanza of the stats log, for `path`."""
    text = (REPO / "debian" / "logwatchd.logrotate").read_text()
    start = text.index("/var/log/logwatchd/stats.log {")
    stanza = text[start:text.index("}", start) + 1]
    stanza = stanza.replace("/var/log/logwatchd/stats.log", str(path))
    stanza = stanza.replace("create 0640 root adm", method)
    return stanza


@pytest.mark.needs("logrotate")
@pytest.mark.parametrize("method", ["create 0640", "copytruncate"])
def test_rotation_by_real_logrotate_loses_and_repeats_nothing(tmp_path: Path,
                                                              method: str) -> None:
    path = tmp_path / "stats.log"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(shipped_stanza(path, method) + "\n")
    log = StatsLog(str(path))
    seq = 0
    for _round in range(3):
        log.write([record(seq + i + 1) for i in range(50)])
        seq += 50
        subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(conf)],
                       check=True, timeout=30)
        # After the rotation the current file is empty: the last seq is found in .1.
        assert log.last_seq() == seq
    log.write([record(seq + 1)])
    found = []
    for f in sorted(tmp_path.glob("stats.log*")):
        data = subprocess.run(["zcat", "-f", str(f)], capture_output=True, check=True).stdout
        found += [int(dict(parse_line(x))["seq"]) for x in data.decode().splitlines()]
    assert sorted(found) == list(range(1, seq + 2))
