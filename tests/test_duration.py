"""Durations with units, one parser for config, daemon flags and logwatchctl."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from daemon_harness import pyenv

from logwatch.daemon.app import build_parser
from logwatch.daemon.config import ConfigError, parse_config
from logwatch.util.duration import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), (90, 90), (1.5, 1.5), ("30s", 30), ("10m", 600), ("1h", 3600), ("7d", 604800),
    ("2w", 1209600), ("1.5h", 5400), (" 5 m ", 300), ("3650d", MAX_DURATION), ("1H", 3600),
])
def test_durations_with_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, words", [
    ("", "unit"), ("h", "unit"), ("1x", "unit"), ("1e308", "unit"), (1e308, "ten years"),
    ("3651d", "ten years"), (math.inf, "finite"), (math.nan, "finite"), ("-5", "greater than 0"),
    (0, "greater than 0"), (True, "unit"), (None, "unit"), ("1h30m", "unit"),
])
def test_bad_durations_say_why(text, words):
    with pytest.raises(ValueError, match=words):
        parse_duration(text)


def test_zero_where_zero_means_off():
    assert parse_duration("0", allow_zero=True) == 0
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-1s", allow_zero=True)


def test_format_duration():
    assert [format_duration(s) for s in (0, 0.5, 59, 90, 3600, 90061)] == [
        "0s", "0.5s", "59s", "1m30s", "1h", "1d1h1m1s"]


def test_config_takes_units_and_names_file_line_key():
    cfg = parse_config("relay:\n  grace: 30m\nbans:\n  findtime: 10m\n  bantime: 1h\n"
                       "  max_bantime: 7d\n  distinct_window: 1d\n"
                       "watchdog:\n  limit: 0\n  interval: 1m\n  grace: 10s\n"
                       "sources:\n  poll_interval: 2s\n")
    assert (cfg.relay.grace, cfg.bans.findtime, cfg.bans.bantime, cfg.bans.max_bantime,
            cfg.bans.distinct_window, cfg.watchdog.limit, cfg.watchdog.interval,
            cfg.watchdog.grace, cfg.sources.poll_interval) == (
        1800, 600, 3600, 604800, 86400, 0, 60, 10, 2)
    with pytest.raises(ConfigError) as err:
        parse_config("relay:\n  grace: 30x\nbans:\n  bantime: 1.0e+300\n", "lw.yaml")
    text = str(err.value)
    assert "lw.yaml:2: relay.grace: must be a number of seconds or a number with a unit" in text
    assert "lw.yaml:4: bans.bantime: must be at most ten years" in text


def test_daemon_flags_take_units():
    args = build_parser().parse_args(["--grace", "30m", "--findtime", "10m", "--bantime", "2h",
                                      "--watchdog-limit", "0"])
    assert (args.grace, args.findtime, args.bantime, args.watchdog_limit) == (1800, 600, 7200, 0)


def test_daemon_flag_with_a_bad_duration_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "logwatch.daemon.app", "--bantime", "1e308"],
                          capture_output=True, text=True, env=pyenv(), timeout=60)
    assert proc.returncode == 2
    assert "--bantime" in proc.stderr and "unit" in proc.stderr
