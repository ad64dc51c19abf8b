"""Durations as admins write them: 90, 1.5, 30s, 10m, 1h, 7d, 2w (config, daemon flags, logwatchctl).

One parser for every place a duration is read, so that "1h" means the same everywhere. A
duration is finite and at most MAX_DURATION (ten years): larger values are almost always a
typo, and 1e308 s would overflow every date computation made from it later.
"""

from __future__ import annotations

import argparse
import math
import re

MAX_DURATION = 10 * 365 * 86400.0     # ten years, in seconds

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}

_RE = re.compile(r"(?P<num>[-+]?[0-9]+(?:\.[0-9]*)?|[-+]?\.[0-9]+)\s*(?P<unit>[smhdw]?)")

SYNTAX = "a number of seconds or a number with a unit s, m, h, d or w (e.g. 90, 30s, 10m, 1h, 7d)"


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds of a duration given as a number or text ("90", "30s", "1h"); ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(f"must be {SYNTAX} (got {value!r})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _RE.fullmatch(value.strip().lower())
        if m is None:
            raise ValueError(f"must be {SYNTAX} (got {value!r})")
        seconds = float(m["num"]) * UNITS[m["unit"] or "s"]
    else:
        raise ValueError(f"must be {SYNTAX} (got {value!r})")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration (got {value!r})")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"must be greater than 0 (got {value!r})" if not allow_zero
                         else f"must not be negative (got {value!r})")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most ten years ({MAX_DURATION:.0f} s) (got {value!r})")
    return seconds


def duration_arg(text: str) -> float:
    """argparse type for a positive duration flag (--grace 30m)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_or_zero_arg(text: str) -> float:
    """argparse type for a duration where 0 means "off" (--watchdog-limit 0)."""
    try:
        return parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(seconds: float) -> str:
    """Short text of a duration for people: 90 -> "1m30s", 7200 -> "2h", 0.5 -> "0.5s"."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
