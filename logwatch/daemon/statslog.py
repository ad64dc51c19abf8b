"""The stats log: one line per message, smtpauth-manager's LTSV-like format (TAB-separated
label:value, `recipient:` repeated), every value escaped so no address forges a field or line.

Each line carries the record's `seq`; the writer fsyncs each batch, and at start finds the last
seq the file (or its rotated copy) holds, so a restart writes exactly the records not yet there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from operator import attrgetter

from logwatch.clock import local
from logwatch.engine.messages import MessageRecord

log = logging.getLogger("logwatchd.statslog")

# Backslash, C0/C1 controls, DEL and the Unicode line breaks: escaped in every value.
_SPECIAL = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNNAMED = {esc[1]: c for c, esc in _NAMED.items()}      # unescape()'s: "t" -> TAB, ...
_SEQ = re.compile(rb"^seq:(\d{1,19})\t")      # the first field of every line
TAIL_BYTES = 1 << 20


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape(value: object) -> str:
    """A value as it goes into the log: TAB, newlines, backslash and controls escaped."""
    text = str(value)
    return _SPECIAL.sub(_escape_char, text) if _SPECIAL.search(text) else text


def unescape(text: str) -> str:
    """The inverse of escape() (for readers and tests)."""
    return re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)", lambda m: (
        _UNNAMED.get(m.group(1)) or chr(int(m.group(1)[1:], 16))), text)


_stamps: dict[int, str] = {}


def stamp(ts: float) -> str:
    """YYYY-MM-DD HH:MM:SS in local time ("" for 0: not known)."""
    if not ts:
        return ""
    second = int(ts)
    text = _stamps.get(second)
    if text is None:
        t = local(second)
        text = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
        if len(_stamps) > 4096:
            _stamps.clear()
        _stamps[second] = text
    return text


_SPECIAL_NO_TAB = re.compile("[\\\\\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _plain_line(r: MessageRecord) -> str:
    """The record's line with nothing escaped (right when no value holds a special char)."""
    rcpts = r.recipients
    n = len(rcpts)
    # One f-string for the usual counts of recipients: no list, no join, no comprehension.
    if n == 1:
        x = rcpts[0]
        a = x.address
        middle = f"\trecipient:{a}\trecipient_status:{a}={x.status}"
    elif n == 2:
        x, y = rcpts
        a, b = x.address, y.address
        middle = (f"\trecipient:{a}\trecipient:{b}"
                  f"\trecipient_status:{a}={x.status}\trecipient_status:{b}={y.status}")
    elif n == 3:
        x, y, z = rcpts
        a, b, c = x.address, y.address, z.address
        middle = (f"\trecipient:{a}\trecipient:{b}\trecipient:{c}"
                  f"\trecipient_status:{a}={x.status}\trecipient_status:{b}={y.status}"
                  f"\trecipient_status:{c}={z.status}")
    else:
        middle = "".join([f"\trecipient:{x.address}" for x in rcpts]
                         + [f"\trecipient_status:{x.address}={x.status}" for x in rcpts])
    get = _stamps.get        # stamp()'s cache, read here: three calls saved per line
    connect, eom, done = r.connect_time, r.eom_time, r.done_time
    # The three times are often the same second: looked up once then.
    c_text = get(int(connect)) or stamp(connect)
    e_text = c_text if eom == connect else get(int(eom)) or stamp(eom)
    d_text = e_text if done == eom else get(int(done)) or stamp(done)
    return (f"seq:{r.seq}\thost:{r.host}\tqueue_id:{r.queue_id}\tclient:{r.client_ip}"
            f"\tclient_name:{r.client_name}\tauth_id:{r.sasl_user}"
            f"\tsasl_method:{r.sasl_method}\tsender:{r.sender}{middle}"
            f"\tconnect_time:{c_text}\teom_time:{e_text}\tdone_time:{d_text}"
            f"\tsize:{r.size}\tnrcpt:{r.nrcpt}\tmessage_id:{r.message_id}\toutcome:{r.outcome}\n")


def _tabs(r: MessageRecord) -> int:
    """The TABs between a record's fields."""
    return 14 + 2 * len(r.recipients)


def format_record(r: MessageRecord) -> str:
    """One stats-log line (with its newline)."""
    # The common case in two C-level scans: no value holds anything to escape, which is
    # the case when the line has exactly its separators' TABs and nothing else special.
    line = _plain_line(r)
    if line.count("\t") == _tabs(r) and not _SPECIAL_NO_TAB.search(line, 0, len(line) - 1):
        return line
    return _format_escaped(r)


# Printable ASCII but the backslash: what a value may hold unescaped, byte for byte.
_PLAIN_BYTES = bytes(c for c in range(0x20, 0x7f) if c != 0x5C)
_RECIPIENTS = attrgetter("recipients")


def format_records(records: list[MessageRecord]) -> bytes:
    """The lines of a batch, encoded: "".join(map(format_record, records)) as UTF-8, checked
    for values to escape in one pass over the whole batch (bytes.translate)."""
    data = "".join(map(_plain_line, records)).encode("utf-8", "backslashreplace")
    # What is left after deleting the plain bytes must be exactly the separators and the
    # newlines (each line has all of its own): then no value holds a special character.
    rest = data.translate(None, _PLAIN_BYTES)
    tabs = 14 * len(records) + 2 * sum(map(len, map(_RECIPIENTS, records)))    # _tabs()
    if len(rest) == tabs + len(records) and rest.count(b"\n") == len(records) \
            and rest.count(b"\t") == tabs:
        return data
    return "".join(map(format_record, records)).encode("utf-8", "backslashreplace")


def _format_escaped(r: MessageRecord) -> str:
    e = escape
    parts = [f"seq:{r.seq}", f"host:{e(r.host)}", f"queue_id:{e(r.queue_id)}",
             f"client:{e(r.client_ip)}", f"client_name:{e(r.client_name)}",
             f"auth_id:{e(r.sasl_user)}", f"sasl_method:{e(r.sasl_method)}",
             f"sender:{e(r.sender)}"]
    parts += [f"recipient:{e(x.address)}" for x in r.recipients]
    parts += [f"recipient_status:{e(x.address)}={e(x.status)}" for x in r.recipients]
    parts += [f"connect_time:{stamp(r.connect_time)}", f"eom_time:{stamp(r.eom_time)}",
              f"done_time:{stamp(r.done_time)}", f"size:{r.size}", f"nrcpt:{r.nrcpt}",
              f"message_id:{e(r.message_id)}", f"outcome:{e(r.outcome)}"]
    return "\t".join(parts) + "\n"


def parse_line(line: str) -> list[tuple[str, str]]:
    """(label, value) pairs of one line, values unescaped (labels may repeat)."""
    pairs = []
    for field in line.rstrip("\n").split("\t"):
        label, _, value = field.partition(":")
        pairs.append((label, unescape(value)))
    return pairs


class StatsLog:
    """Appends batches of lines, fsynced; reopens a file logrotate moved or removed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self.failed = False

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        # Addresses and user names: never world-readable, whatever the umask.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(fd)
        if st.st_mode & 0o027:
            os.fchmod(fd, st.st_mode & 0o7750)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    def write(self, records: Iterable[MessageRecord]) -> None:
        """Append the records' lines and fsync; OSError propagates (the caller retries)."""
        data = format_records(list(records))
        if not data:
            return
        if self._fd is None or self._moved():
            self.close()
            self._open()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            # O_APPEND: after a copytruncate the next write starts at the new end (0).
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def reopen(self) -> None:
        """SIGHUP: the next write opens the path again."""
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def last_seq(self) -> int:
        """The highest seq in the file, else in its rotated copy (path.1), else 0. A partial
        last line (a kill in the middle of a write) is cut off first."""
        for candidate in (self.path, self.path + ".1"):
            seq = _last_seq_of(candidate, repair=candidate == self.path)
            if seq is not None:
                return seq
        return 0


def _last_seq_of(path: str, repair: bool) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR if repair else os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            if repair:
                os.ftruncate(fd, start + cut)
                os.fsync(fd)
                log.warning("action=statslog-repair path=%s cut=%d (a partial last line)",
                            path, len(tail) - cut)
            tail = tail[:cut]
        for line in reversed(tail.split(b"\n")):
            m = _SEQ.match(line)
            if m:
                return int(m.group(1))
        return None
    finally:
        os.close(fd)
