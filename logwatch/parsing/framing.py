"""Syslog framing: split a log line into time, host, program and message.

Understood: RFC 3164 (`Nov 21 19:43:39 host prog[pid]: msg`, also with fractional seconds as
Postfix's postlogd writes them, and FreeBSD's `syslogd -v` `<mail.notice>` before the host),
RFC 5424, rsyslog's ISO 8601 timestamps, daemontools TAI64N (`@4000... prog: msg`), Dovecot's
own log files (no host, a level after the tag) and Exim's own mainlog (`2026-11-21 10:00:00
[pid] msg`: no host, no tag).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from logwatch.clock import Clock, wall

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# The timestamp at the start of a line, with an optional <PRI> and RFC 5424's version "1".
_STAMP = re.compile(
    r"(?:<\d{1,3}>)?(?:"
    r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<day>\d{1,2}) "
    r"(?:(?P<byear>\d{4}) )?(?P<bhms>\d\d:\d\d:\d\d)(?P<bfrac>\.\d{1,9})?"
    r"|(?P<v5424>1 )?(?P<ymd>\d{4}-\d\d-\d\d)(?P<sep>[T ])(?P<ihms>\d\d:\d\d:\d\d)"
    r"(?P<ifrac>[.,]\d{1,9})?(?: ?(?P<tz>Z|[+-]\d\d:?\d\d))?"
    r"|@(?P<tai>[0-9a-f]{24})"
    r") +(?:<[a-z0-9]+\.[a-z]+> )?"
)
# Exim's mainlog after its "YYYY-MM-DD hh:mm:ss" stamp: an optional "[pid] ", then the message,
# which often starts with a message id (1VxPit-000MMd-U4) that must not be taken for a host.
_EXIM_OWN = re.compile(r"(?:\[(?P<pid>\d+)\] )?(?P<msg>(?P<msgid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-"
                       r"[0-9A-Za-z]{2,4} )?.*)$", re.S)
# After the stamp: RFC 5424 "HOST APP PROCID MSGID [SD]|- MSG". An SD-ELEMENT is exactly
# [SD-ID *(SP PARAM-NAME="PARAM-VALUE")], names without SP = ] "; inside a value '"', '\' and
# ']' must be escaped with '\'. Anything else (an unescaped ] in a value, as in [m v="a]
# reject: ... [6.6.6.6] ..."]) is malformed: no frame, so its text never becomes the message.
_SD_NAME = r'[^\s=\]"]+'
_SD_ELEMENT = rf'\[{_SD_NAME}(?: {_SD_NAME}="(?:[^"\\\]]|\\.)*")*\]'
_R5424 = re.compile(
    rf"(?P<host>\S+) (?P<prog>\S+) (?P<pid>\S+) \S+ (?:-|(?:{_SD_ELEMENT})+)(?: (?P<msg>.*))?$",
    re.S,
)
# Dovecot's own log: "TAG: Level: msg"; the tag may carry "(ids)" and "<session>".
_DOVECOT_OWN = re.compile(
    r"(?P<tag>[a-z][a-z0-9-]*(?:\([^)]*\))?(?:<[^>\s]*>)?): "
    r"(?:Info|Warning|Error|Fatal|Panic|Debug): (?P<msg>.*)$",
    re.S,
)
_TAG = r"(?P<prog>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$"
_HOSTLESS = re.compile(_TAG, re.S)
_HOSTFUL = re.compile(r"(?P<host>\S*[^\s:]) " + _TAG, re.S)

# The common case in one regex: "Mmm dd hh:mm:ss host prog[pid]: msg" (a host never ends in ':',
# which keeps Dovecot's own "Mmm dd hh:mm:ss pop3-login: Info: ..." out of this path).
# Groups: 1 stamp, 2-6 its fields, 7 host, 8 program, 9 pid, 10 message.
FAST_FRAME = re.compile(
    r"(([A-Z][a-z][a-z]) +(\d{1,2}) (\d\d):(\d\d):(\d\d)) "
    r"(\S*[^\s:]) ([^\s\[\]:]+)(?:\[(\d+)\])?: ?(.*)",
    re.S,
)

_SECONDS = {f"{s:02d}": timedelta(seconds=s) for s in range(60)}

# A syslog date with no year gets the year that puts it closest to "now" (Jan  1 00:00:10 seen
# at Dec 31 23:59:30 is next year's), except that a year putting it more than
# YEAR_FUTURE_LIMIT ahead is never chosen: a line from last December read in November is old,
# not from the future (which the engine would take as "now"). So the choice is the latest year
# not over that limit, and it flips only when next year's same date comes within the limit: a
# date less than YEAR_CACHE_SPAN old is at least 364 days (365 - 1 of limit) before that, far
# beyond the caches' life of a day, so its choice is cached. (It was 30 days: catching up on a
# 5-week-old log then placed every line's stamp afresh, a third of test-rules' time.)
YEAR_FUTURE_LIMIT = 86400.0
YEAR_CACHE_SPAN = 360 * 86400.0
YEAR_CACHE_LIFE = 86400.0


@dataclass(frozen=True, slots=True)
class Frame:
    time: datetime
    host: str | None
    program: str
    pid: int | None
    message: str


class Framer:
    """Parses the framing of single lines; the clock (epoch seconds) decides syslog years."""

    def __init__(self, clock: Clock = wall) -> None:
        self.clock = clock
        self.stamp_cache: dict[str, datetime] = {}
        self._minute_bases: dict[str, datetime] = {}     # "Nov 21 10:00" -> its time at :00
        self._hour_bases: dict[tuple[int, int, int], list[tuple[datetime, float]]] = {}
        self._year, self._year_start, self._year_end = 0, 0.0, 0.0
        self._caches_until = 0.0

    def frame_fast(self, line: str) -> tuple[datetime, str | None, str, str] | None:
        """(time, host, program, message) of a line, or None; frame_lines of one line."""
        return self.frame_lines([line])[0]

    def frame_lines(self, lines: list[str]) -> list[tuple[datetime, str | None, str, str] | None]:
        """frame_fast of each line: the common RFC 3164 form by one regex and the stamp caches,
        the rest through frame()."""
        self._expire_caches()
        frames: list[tuple[datetime, str | None, str, str] | None] = []
        append, stamp_get = frames.append, self.stamp_cache.get
        for line, m in zip(lines, map(FAST_FRAME.match, lines), strict=True):
            if m is not None:
                stamp, host, program, message = m.group(1, 7, 8, 10)
                when = stamp_get(stamp) or self.stamp_time(m)
                if when is not None:
                    append((when, host, program, message))
                    continue
            frame = self.frame(line)
            append(None if frame is None else (frame.time, frame.host, frame.program, frame.message))
        return frames

    def frame(self, line: str) -> Frame | None:
        """The framing of one line (without its newline), or None if it is not understood."""
        m = _STAMP.match(line)
        if m is None:
            return None
        self._expire_caches()
        stamp = m.group(0).rstrip(" ")
        when = self.stamp_cache.get(stamp)
        if when is None:
            when = self._time(m)
            if when is None:
                return None
            if not (m.group("mon") and not m.group("byear")) or self._cacheable(when):
                self._remember(stamp, when)
        rest = line[m.end():]
        if m.group("v5424"):
            r = _R5424.match(rest)
            if r is None:
                return None
            host = None if r.group("host") == "-" else r.group("host")
            pid = r.group("pid")
            return Frame(when, host, r.group("prog"), int(pid) if pid.isdigit() else None,
                         _strip_bom(r.group("msg") or ""))
        d = _DOVECOT_OWN.match(rest)
        if d is not None:
            return Frame(when, None, "dovecot", None, f"{d.group('tag')}: {d.group('msg')}")
        exim = m.group("sep") == " " and _EXIM_OWN.match(rest)
        if exim and (exim.group("pid") or exim.group("msgid")):
            return _exim_frame(when, exim)
        t = _HOSTLESS.match(rest) if m.group("tai") or _first_token_is_tag(rest) else None
        host = None
        if t is None:
            t = _HOSTFUL.match(rest)
            if t is None:
                # Exim's mainlog is the one framing whose lines may start with anything.
                return _exim_frame(when, exim) if exim else None
            host = t.group("host")
        pid = t.group("pid")
        return Frame(when, host, t.group("prog"), int(pid) if pid else None, t.group("msg"))

    def stamp_time(self, m: re.Match[str]) -> datetime | None:
        """The time of a FAST_FRAME match's stamp (cached); within a minute already placed in
        its year (the current one) that is one addition."""
        stamp = m.group(1)
        minute = self._minute_bases.get(stamp[:-3])
        second = _SECONDS.get(stamp[-2:])
        if minute is not None and second is not None:
            when = minute + second
        else:
            mon, day, hh, mm, ss = m.group(2, 3, 4, 5, 6)
            try:
                when = self._syslog_time(MONTHS[mon], int(day), int(hh), int(mm), int(ss), 0)
            except (KeyError, ValueError):      # no month name, or no such date
                return None
            if when is None:
                return None
            if not self._cacheable(when):
                return when
            # Every second of a minute near now gets the same year: one base serves them all.
            if len(self._minute_bases) > 4096:
                self._minute_bases.clear()
            self._minute_bases[stamp[:-3]] = when.replace(second=0)
        self._remember(stamp, when)
        return when

    def _cacheable(self, when: datetime) -> bool:
        """Whether a year-less stamp's year choice may be cached: near now, and its whole
        minute on this side of the future limit."""
        ts, now = when.timestamp(), self.clock()
        return (abs(ts - now) < YEAR_CACHE_SPAN
                and ts - when.second + 60 <= now + YEAR_FUTURE_LIMIT)

    def _remember(self, stamp: str, when: datetime) -> None:
        if len(self.stamp_cache) > 4096:
            self.stamp_cache.clear()
        self.stamp_cache[stamp] = when

    def _time(self, m: re.Match[str]) -> datetime | None:
        try:
            if m.group("mon"):
                return self._bsd_time(m)
            if m.group("tai"):
                label = int(m.group("tai")[:16], 16)
                nanos = int(m.group("tai")[16:], 16)
                # TAI64 labels count from 2**62; TAI is 10 s ahead of UTC in daemontools' convention.
                seconds = label - (1 << 62) - 10
                return datetime.fromtimestamp(seconds + nanos / 1e9, UTC).astimezone()
            frac = m.group("ifrac") or ""
            text = f"{m.group('ymd')}T{m.group('ihms')}{frac.replace(',', '.')[:7]}"
            when = datetime.fromisoformat(text)
            tz = m.group("tz")
            if tz:
                if tz == "Z":
                    return when.replace(tzinfo=UTC)
                sign = 1 if tz[0] == "+" else -1
                digits = tz[1:].replace(":", "")
                offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
                return when.replace(tzinfo=timezone(sign * offset))
            return _local(when)
        except (ValueError, OverflowError, OSError):
            return None

    def _bsd_time(self, m: re.Match[str]) -> datetime | None:
        hh, mm, ss = (int(x) for x in m.group("bhms").split(":"))
        frac = m.group("bfrac")
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        month, day = MONTHS[m.group("mon")], int(m.group("day"))
        if m.group("byear"):
            return _local(datetime(int(m.group("byear")), month, day, hh, mm, ss, micro))
        return self._syslog_time(month, day, hh, mm, ss, micro)

    def _syslog_time(self, month: int, day: int, hh: int, mm: int, ss: int,
                     micro: int) -> datetime | None:
        """A year-less syslog time: the year (next, this or a past one) putting it closest to now."""
        now = self.clock()
        if not self._year_start <= now < self._caches_until:
            self._new_year(now)
        bases = self._hour_bases.get((month, day, hh))
        if bases is None:
            bases = []
            # Feb 29 may need to go back several years to the last leap year.
            for year in range(self._year + 1, self._year - 8, -1):
                try:
                    base = _local(datetime(year, month, day, hh))
                except ValueError:
                    continue
                bases.append((base, base.timestamp()))
                if len(bases) == 3:
                    break
            if len(self._hour_bases) > 4096:
                self._hour_bases.clear()
            self._hour_bases[(month, day, hh)] = bases
        # The offset within the hour is exact arithmetic: an hour's base has one UTC offset.
        offset = mm * 60 + ss + micro / 1e6
        allowed = [b for b in bases if b[1] + offset <= now + YEAR_FUTURE_LIMIT]
        if not allowed:
            return None
        base, _ts = min(allowed, key=lambda b: abs(b[1] + offset - now))
        return base.replace(minute=mm, second=ss, microsecond=micro)

    def _expire_caches(self) -> None:
        """Cached year choices hold for a day at most (and never across a new year)."""
        now = self.clock()
        if not self._year_start <= now < self._caches_until:
            self._new_year(now)

    def _new_year(self, now: float) -> None:
        """Which year "now" is in decides every syslog date: recompute it when it changes
        (and drop the caches daily, so no cached year choice outlives its reason)."""
        self._year = datetime.fromtimestamp(now).year
        self._year_start = _local(datetime(self._year, 1, 1)).timestamp()
        self._year_end = _local(datetime(self._year + 1, 1, 1)).timestamp()
        self._caches_until = min(now + YEAR_CACHE_LIFE, self._year_end)
        self._hour_bases.clear()
        self.stamp_cache.clear()
        self._minute_bases.clear()


_offsets: dict[tuple[int, int, int, int], timezone] = {}


def _exim_frame(when: datetime, m: re.Match[str]) -> Frame:
    pid = m.group("pid")
    return Frame(when, None, "exim", int(pid) if pid else None, m.group("msg"))


def _local(naive: datetime) -> datetime:
    """A naive local wall-clock time made aware with the system's UTC offset at that moment."""
    key = (naive.year, naive.month, naive.day, naive.hour)
    tz = _offsets.get(key)
    if tz is None:
        # mktime knows the zone's rules (DST); offsets change at most on the hour.
        epoch = time.mktime(naive.replace(minute=30, second=0, microsecond=0).timetuple())
        tz = datetime.fromtimestamp(epoch).astimezone().tzinfo
        if len(_offsets) > 4096:
            _offsets.clear()
        _offsets[key] = tz
    return naive.replace(tzinfo=tz)


def _first_token_is_tag(rest: str) -> bool:
    """True when the text after the stamp starts with `prog:`/`prog[pid]:` (no host field)."""
    space = rest.find(" ")
    token = rest if space < 0 else rest[:space]
    return token.endswith(":")


def _strip_bom(msg: str) -> str:
    return msg[1:] if msg.startswith("\ufeff") else msg
