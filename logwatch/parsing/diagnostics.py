"""test-rules' diagnostics: lines whose syslog framing is not understood, and unmatched lines that
look like failures, found by whole-chunk passes instead of a Python step per line.

Framing: one regex pass stops only at lines NOT in the common RFC 3164 shape (FRAMED, which the
framer always understands); only those few go through Framer.frame(). Failures: a literal
matcher of the parser's kind finds the lines holding a failure word in the lowercased chunk;
only those lines meet the exact regex. `diagnose_slow` is the per-line reference to equal.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain, repeat

from logwatch.parsing.framing import Framer
from logwatch.parsing.literalscan import make_matcher

# Words that suggest a line reports a failure; used only to show admins what the rules miss.
FAILURE_WORDS = re.compile(
    # "unknown[" is Postfix's name for a client without reverse DNS, not a failure.
    rb"fail|reject|unknown(?!\[)|denied|invalid|refused|mismatch|blocked|bad |too many|not found|"
    rb"illegal",
    re.IGNORECASE,
)
# The same on a lowercased line, five times faster than IGNORECASE in sre.
_FAILURE_WORDS_LOWER = re.compile(FAILURE_WORDS.pattern)
# Every match of FAILURE_WORDS holds one of these, in a line lowercased (ASCII, as IGNORECASE
# folds bytes).
FAILURE_LITERALS = (b"fail", b"reject", b"unknown", b"denied", b"invalid", b"refused",
                    b"mismatch", b"blocked", b"bad ", b"too many", b"not found", b"illegal")

# "Mmm dd hh:mm:ss host prog[pid]:" with a real calendar date and time, in ASCII. Framer.frame()
# understands every line starting so: its stamp regex takes it, the date exists (a year-less
# date falls back to last year, Feb 29 to a leap year), and the host (no ':', not '<' first,
# which the stamp would take for a facility) and tag fit its host-and-tag regex.
FRAMED = re.compile(
    rb"(?:(?:Jan|Mar|May|Jul|Aug|Oct|Dec) +(?:0?[1-9]|[12]\d|3[01])"
    rb"|(?:Apr|Jun|Sep|Nov) +(?:0?[1-9]|[12]\d|30)|Feb +(?:0?[1-9]|[12]\d))"
    rb" (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})? +"
    rb"[!-9;=-~][!-9;-~]* [!-9;-Z\\^-~]+(?:\[\d+\])?:"
)
# The newline before each line not shaped like FRAMED (one sre pass over the chunk).
_UNUSUAL = re.compile(rb"\n(?!" + FRAMED.pattern + rb")")


@dataclass
class Findings:
    """Counts and the first `sample` lines of each kind, as (line number, raw bytes)."""

    sample: int = 20
    unframed_count: int = 0
    unframed: list[tuple[int, bytes]] = field(default_factory=list)
    suspect_count: int = 0
    suspects: list[tuple[int, bytes]] = field(default_factory=list)

    def add_unframed(self, number: int, raw: bytes) -> None:
        self.unframed_count += 1
        if len(self.unframed) < self.sample:
            self.unframed.append((number, raw))

    def add_suspect(self, number: int, raw: bytes) -> None:
        self.suspect_count += 1
        if len(self.suspects) < self.sample:
            self.suspects.append((number, raw))


def _line_numbers(chunk: bytes, starts: list[int], first_line: int) -> list[int]:
    """The numbers of the lines starting at `starts` (ascending), without a per-line loop."""
    return list(accumulate(map(chunk.count, repeat(b"\n"), chain((0,), starts), starts),
                           initial=first_line))[1:]


def _line(chunk: bytes, start: int) -> bytes:
    end = chunk.find(b"\n", start)
    return chunk[start:] if end < 0 else chunk[start:end]


class Diagnostics:
    """Feeds chunks of whole lines (the last chunk may lack its final newline) into Findings."""

    def __init__(self, framer: Framer, matcher: str = "auto", sample: int = 20) -> None:
        self.framer = framer
        self.matcher = make_matcher(FAILURE_LITERALS, matcher, caseless=True)
        self.findings = Findings(sample)

    def scan(self, chunk: bytes, first_line: int, matched: Container[int],
             matched_starts: Sequence[int] = ()) -> None:
        """Check a chunk whose first line is number `first_line`; `matched`: line numbers
        some rule turned into an event; `matched_starts`: where such lines start in the chunk,
        ascending (optional: the failure words are then not looked for in them at all)."""
        if not chunk:
            return
        unusual = [] if FRAMED.match(chunk) else [0]
        unusual.extend(m.end() for m in _UNUSUAL.finditer(chunk))
        if unusual and unusual[-1] == len(chunk):
            unusual.pop()                 # after the chunk's final newline: no line
        found, frame = self.findings, self.framer.frame
        unframed: set[int] = set()
        for start, number in zip(unusual, _line_numbers(chunk, unusual, first_line), strict=True):
            raw = _line(chunk, start)
            if frame(raw.decode("utf-8", "replace")) is None and raw.strip():
                unframed.add(number)
                found.add_unframed(number, raw)
        text = _without_lines(chunk, matched_starts) if matched_starts else chunk
        wordy = self.matcher.candidates(text if self.matcher.caseless else text.lower())[0]
        search = _FAILURE_WORDS_LOWER.search
        for start, number in zip(wordy, _line_numbers(text, wordy, first_line), strict=True):
            if number in matched or number in unframed:
                continue
            raw = _line(text, start)
            if search(raw.lower()):
                found.add_suspect(number, raw)


def _without_lines(chunk: bytes, starts: Sequence[int]) -> bytes:
    """The chunk with the lines starting at `starts` (ascending) emptied: only their newlines
    stay, so every other line keeps its number. Slices and one join, no step per line."""
    ends = list(map(chunk.find, repeat(b"\n"), starts))
    if ends[-1] < 0:
        ends[-1] = len(chunk)             # the last line, without a newline
    return b"".join(map(chunk.__getitem__, map(slice, chain((0,), ends),
                                               chain(starts, (len(chunk),)))))


def diagnose_slow(framer: Framer, chunk: bytes, first_line: int, matched: Container[int],
                  found: Findings) -> None:
    """Reference path: frame and check every line in Python (what test-rules did before)."""
    # split(b"\n"), not splitlines(): a \r inside a line must not shift the numbers away
    # from the parser's (which counts \n only).
    lines = chunk.split(b"\n")
    if not lines[-1]:
        lines.pop()
    for offset, raw in enumerate(lines):
        number = first_line + offset
        if framer.frame(raw.decode("utf-8", "replace")) is None and raw.strip():
            found.add_unframed(number, raw)
        elif number not in matched and FAILURE_WORDS.search(raw):
            found.add_suspect(number, raw)
