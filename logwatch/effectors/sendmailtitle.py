"""Sendmail process titles: which ones are stuck SMTP sessions ("cmd read"), and the client
address in them. Pure text work for the watchdog (logwatch.effectors.watchdog)."""

from __future__ import annotations

import re

from logwatch.daemon.config import WatchdogConfig
from logwatch.parsing.events import normalize_ip

# Longest title we look at; sendmail's own buffer is far smaller, and the bound keeps
# regex work per process constant whatever a process writes into its argv area.
MAX_TITLE = 4096

_PROG = r"(?:sendmail|sm-mta|sendmail-mta)"
# Optional "PREFIX: " segments (ProcTitlePrefix, e.g. Debian's "MTA: ", or a queue id).
_SEGS = r"(?:[^\s:\[\]]{1,64}: ){0,2}"

# Built-in "cmd read" titles.  The client address is the last bracketed token, taken
# from the anchored end: sendmail appends it after the (remote-controlled) ident user
# and PTR name, so no text those parties choose can stand in for it.
DEFAULT_PATTERNS: tuple[str, ...] = (
    _PROG + r": " + _SEGS
    # "server [ip]", "server host [ip]", "server user@host [ip]", and, without reverse DNS
    # but with an ident answer, "server user@[ip]".
    + r"server (?:[^\x00-\x1f]{0,1024}?[ @])?\[(?P<addr>[^\[\]\s]{1,80})\]"
    + r"(?: \(may be forged\))? cmd read",
)

# Titles that are never ours to end, whatever custom pattern matches them: the daemon
# parent and queue runners.  Anchored at the start, which no remote party controls.
_NEVER = re.compile(
    r"^" + _PROG + r": " + _SEGS
    + r"(?:(?:accepting|rejecting|deferring) connections"
    + r"|running queue|queue ?runner|queue control|\S+ from queue|starting daemon)",
    re.IGNORECASE,
)


def compile_patterns(cfg: WatchdogConfig) -> list[re.Pattern[str]]:
    """Built-in plus configured title patterns; a bad regex raises ValueError naming it."""
    compiled = [re.compile(p) for p in DEFAULT_PATTERNS]
    for i, text in enumerate(cfg.patterns):
        try:
            compiled.append(re.compile(text))
        except re.error as exc:
            raise ValueError(f"watchdog.patterns[{i}] {text!r}: invalid regex: {exc}") from exc
    return compiled


def title_from_cmdline(raw: bytes) -> str:
    """The process title from raw /proc/PID/cmdline bytes: argv[0] without NUL/space padding.

    Sendmail writes its whole title into argv[0] and pads the rest of the argv area with
    NULs (Linux) or spaces, so argv[0] is the title; psutil's cmdline() would split a
    single NUL-terminated title on spaces, which is why we read the raw bytes.
    """
    head = raw[:MAX_TITLE].split(b"\0", 1)[0]
    return head.decode("utf-8", "replace").rstrip()


def client_ip(match: re.Match[str]) -> str | None:
    """Validated, normalised client address from a title match's `addr` group, or None."""
    try:
        addr = match.group("addr")
    except IndexError:
        return None
    if not addr:
        return None
    if addr[:5].lower() == "ipv6:":
        addr = addr[5:]
    return normalize_ip(addr)


def read_cmdline(pid: int) -> bytes | None:
    """/proc/PID/cmdline, at most MAX_TITLE bytes; None if unreadable (gone, hidden)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb", buffering=0) as fh:
            return fh.read(MAX_TITLE)
    except OSError:
        return None
