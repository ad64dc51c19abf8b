"""A configured log file that does not exist: warned about at start, in the stats (status),
and again, rate-limited, while it stays missing; followed from its first line once it appears."""

from __future__ import annotations

import logging
import os

import pytest
from sourceloop import pump
from tailmode import tail_mode  # noqa: F401  (a fixture)

from logwatch.sources import FileTailer
from logwatch.sources.missing import FIRST_REPEAT, GRACE, MAX_REPEAT, MissingFiles


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "action=file-missing" in r.getMessage()]


@pytest.mark.usefixtures("tail_mode")
def test_missing_at_start_is_warned_then_followed(tmp_path, caplog) -> None:
    p = str(tmp_path / "mial.log")
    got: list[bytes] = []
    with caplog.at_level(logging.INFO, logger="logwatchd.sources.tail"):
        t = FileTailer([p], on_chunk=lambda n, c: got.append(c), poll_interval=0.05)
        try:
            msgs = warnings(caplog)
            assert len(msgs) == 1 and f"path={p}" in msgs[0] and "rsyslog" in msgs[0]
            assert t.stats()[p]["missing"] == 1
            t.process()
            t.check_missing()
            assert len(warnings(caplog)) == 1          # rate-limited: not on every pass
            with open(p, "ab") as fh:
                fh.write(b"first\n")
            pump(t, lambda: got == [b"first\n"])
            t.check_missing()
            assert t.stats()[p]["missing"] == 0
            assert any("action=file-appeared" in r.getMessage() for r in caplog.records)
        finally:
            t.close()


def test_present_file_gives_no_warning(tmp_path, caplog) -> None:
    p = tmp_path / "mail.log"
    p.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="logwatchd.sources.tail"):
        t = FileTailer([str(p)], on_chunk=lambda n, c: None)
        t.close()
    assert warnings(caplog) == [] and t.stats()[str(p)]["missing"] == 0


def test_warnings_are_rate_limited_and_rotation_gaps_are_not_reported(caplog) -> None:
    log = logging.getLogger("test.missing")
    m = MissingFiles(log)
    with caplog.at_level(logging.INFO, logger="test.missing"):
        m.update("/var/log/mail.log", False, 1000.0, at_start=True)
        times = [1000.0]
        now = 1000.0
        while now < 1000.0 + 4 * MAX_REPEAT:
            now += 1.0
            before = len(warnings(caplog))
            m.update("/var/log/mail.log", False, now)
            if len(warnings(caplog)) != before:
                times.append(now)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps[:3] == [FIRST_REPEAT, 2 * FIRST_REPEAT, 4 * FIRST_REPEAT]
        assert max(gaps) == MAX_REPEAT and gaps[-1] == MAX_REPEAT
        assert m.is_missing("/var/log/mail.log")
        m.update("/var/log/mail.log", True, now)
        assert not m.is_missing("/var/log/mail.log")
        caplog.clear()
        # Gone for less than GRACE while running (between a rename and the new file): silent.
        m.update("/var/log/mail.log", False, now + 1)
        m.update("/var/log/mail.log", False, now + GRACE)
        m.update("/var/log/mail.log", True, now + GRACE + 0.5)
        assert warnings(caplog) == [] and not m.is_missing("/var/log/mail.log")
        m.update("/var/log/mail.log", False, now + 100)
        m.update("/var/log/mail.log", False, now + 100 + GRACE)
        assert len(warnings(caplog)) == 1


def test_missing_directory_too(tmp_path, caplog) -> None:
    p = str(tmp_path / "nodir" / "mail.log")
    with caplog.at_level(logging.WARNING, logger="logwatchd.sources.tail"):
        t = FileTailer([p], on_chunk=lambda n, c: None)
        try:
            assert t.stats()[p]["missing"] == 1
        finally:
            t.close()
    assert len(warnings(caplog)) == 1
    assert not os.path.exists(p)
