"""Time has one source: ruff bans reading the wall clock outside logwatch/clock.py, and the
places that read "now" take an injected clock (tests/conftest.py FakeClock)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FakeClock

from logwatch.cli.ctl import format_bans, format_grants, format_offenders
from logwatch.daemon.config import WatchdogConfig
from logwatch.effectors.watchdog import TERM_SENT, KillReport, Watchdog
from logwatch.sources.journal import record_to_line
from logwatch.sources.tail import FileTailer

TOP = Path(__file__).resolve().parent.parent
RUFF = [sys.executable, "-m", "ruff"]

# Each reads the wall clock; every one must be refused outside logwatch/clock.py.
READS = [
    "import time\nx = time.time()\n",
    "import time\nx = time.time_ns()\n",
    "from time import time\nx = time()\n",
    "import datetime\nx = datetime.datetime.now()\n",
    "from datetime import datetime\nx = datetime.now()\n",
    "from datetime import UTC, datetime\nx = datetime.now(UTC)\n",
    "from datetime import datetime\nx = datetime.utcnow()\n",
    "from datetime import date\nx = date.today()\n",
    "import time\nx = time.localtime()\n",
    "import time\nx = time.strftime('%H')\n",
    "import time\nx = time.gmtime()\n",
    "import time\nx = time.ctime()\n",
    "import time\nf = time.time\n",          # passed as a default clock is a read, too
]


def ruff(source: str, filename: str) -> subprocess.CompletedProcess[str]:
    """ruff check of source as if it were the file `filename` of the work tree."""
    return subprocess.run(
        [*RUFF, "check", "--no-cache", "--select", "TID251", "--stdin-filename", filename, "-"],
        input=source, capture_output=True, text=True, timeout=60, cwd=TOP, check=False)


@pytest.mark.needs("ruff")
@pytest.mark.parametrize("source", READS)
def test_ruff_bans_reading_the_clock_in_the_package(source: str) -> None:
    result = ruff(source, "logwatch/sources/newsource.py")
    assert result.returncode == 1 and "TID251" in result.stdout, result.stdout + result.stderr


@pytest.mark.needs("ruff")
@pytest.mark.parametrize("filename", ["logwatch/clock.py", "tests/test_x.py", "bench/x_bench.py"])
def test_ruff_allows_the_clock_module_tests_and_bench(filename: str) -> None:
    result = ruff("import time\nx = time.time()\n", filename)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.needs("ruff")
def test_ruff_allows_converting_a_given_time() -> None:
    source = ("import time\nfrom datetime import UTC, datetime\n"
              "a = datetime.fromtimestamp(5.0, UTC)\nb = time.monotonic()\nc = time.mktime(a.timetuple())\n")
    result = ruff(source, "logwatch/parsing/x.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_journal_record_without_timestamp_is_dated_by_the_clock() -> None:
    clock = FakeClock(1_600_000_000.0)
    rec = {"MESSAGE": "hello", "SYSLOG_IDENTIFIER": "postfix/smtpd", "_HOSTNAME": "mx1"}
    dated = dict(rec, __REALTIME_TIMESTAMP=str(int(clock.now * 1e6)))
    assert record_to_line(rec, clock=clock) == record_to_line(dated)
    clock.advance(86400 * 40)
    assert record_to_line(rec, clock=clock) != record_to_line(dated)


def test_watchdog_event_is_dated_by_the_clock() -> None:
    clock = FakeClock(1_600_000_000.0)
    wd = Watchdog(WatchdogConfig(count_as_offence=True), clock=clock)
    report = KillReport(pid=42, title="sendmail: stuck", age=4000.0, ip="192.0.2.7",
                        signal="TERM", outcome=TERM_SENT)
    event = wd.to_event(report)
    assert event is not None and event.time == datetime.fromtimestamp(1_600_000_000.0, UTC)


def test_logwatchctl_tables_count_down_from_the_clock() -> None:
    clock = FakeClock(1_600_000_000.0)
    row = {"ip": "192.0.2.7", "since": clock.now - 60, "expires": clock.now + 2 * 3600}
    assert "(in 2h" in format_bans([row], clock=clock)
    assert "(in 2h" in format_grants([row], clock=clock)
    clock.advance(3600)
    assert "(in 1h" in format_bans([row], clock=clock)
    offender = {"ip": "192.0.2.0/24", "score": 2, "threshold": 5, "reasons": {"auth-failed": 2},
                "decays_at": clock.now + 600, "clears_at": clock.now + 1200}
    assert "in 10m" in format_offenders([offender], 1, clock=clock)


def test_tailer_takes_now_from_its_clock(tmp_path: Path) -> None:
    """Started at the end, the tailer reads only files rotated after its clock's now."""
    log = tmp_path / "mail.log"
    log.write_text("old line\n")
    clock = FakeClock(4_000_000_000.0)           # 2096: later than the file's mtime
    tailer = FileTailer([str(log)], on_chunk=lambda name, chunk: None, force_polling=True,
                        clock=clock)
    try:
        assert tailer.files[0].cur is not None
        assert tailer.files[0].cur.mtime_ns == 4_000_000_000 * 10**9
    finally:
        tailer.close()
