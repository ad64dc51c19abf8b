"""Which lines of a chunk may hold which prefilter literals: the parser's first pass.

Both matchers give the same kind of answer: the start offsets of the candidate lines, in
order, and for each a bit set over `literals`; a matcher may over-report (the parser then
checks each literal with `in`) but never miss.
`HyperscanMatcher` (Vectorscan, optional) finds every literal in one SIMD pass and reports
exactly; `PivotMatcher` needs only CPython's re.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import repeat

log = logging.getLogger(__name__)

MATCHERS = ("auto", "hyperscan", "re")

try:  # optional: `pip install hyperscan` (statically linked Vectorscan wheels)
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - depends on the installation
    _hyperscan = None


def hyperscan_available() -> bool:
    return _hyperscan is not None


class HyperscanMatcher:
    """All literals in one Vectorscan pass; the callback only records (end offset, literal)."""

    name = "hyperscan"
    exact = True                # reports only literals that are in the line

    def __init__(self, literals: Sequence[bytes], caseless: bool = False) -> None:
        if _hyperscan is None:
            raise RuntimeError("the hyperscan module is not installed")
        self.literals = tuple(literals)
        self.passes = 1
        self.caseless = caseless    # ASCII letters in either case (re.IGNORECASE on bytes)
        self._bits = [1 << i for i in range(len(self.literals))]
        self._db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
        if self.literals:
            flags = _hyperscan.HS_FLAG_CASELESS if caseless else 0
            self._db.compile(expressions=list(self.literals), ids=list(range(len(self.literals))),
                             elements=len(self.literals), flags=flags, literal=True)

    def candidates(self, chunk: bytes) -> tuple[list[int], list[int]]:
        if not self.literals or not chunk:
            return [], []
        ends: list[int] = []
        literals: list[int] = []
        add_end, add_literal = ends.append, literals.append

        def on_match(literal: int, _start: int, end: int, _flags: int, _context: object) -> None:
            add_end(end)
            add_literal(literal)

        self._db.scan(chunk, match_event_handler=on_match)
        if ends != sorted(ends):    # Hyperscan does not promise end-offset order
            pairs = sorted(zip(ends, literals, strict=True))
            ends, literals = [e for e, _ in pairs], [lit for _, lit in pairs]
        # A literal holds no newline: its line starts after the last newline before its end.
        starts: list[int] = []
        masks: list[int] = []
        bits = self._bits
        line = -1
        mask = 0
        for start, literal in zip(map(chunk.rfind, repeat(b"\n"), repeat(0), ends), literals,
                                  strict=True):
            if start != line:
                if mask:
                    starts.append(line + 1)
                    masks.append(mask)
                line, mask = start, 0
            mask |= bits[literal]
        if mask:
            starts.append(line + 1)
            masks.append(mask)
        return starts, masks


class PivotMatcher:
    """Literals grouped under rare "pivot" bytes, one CPython re pass per group (plan_scans).

    sre finds a single literal first byte at memory speed but crawls through an alternation
    of many literals, so `U(?:ser unknown|NKNOWN)` covers every literal holding a `U` in one
    fast pass. The plan is made again on the first large chunk, from the log's own bytes.
    """

    name = "re"
    exact = False               # reports every literal of a pass that hit the line
    caseless = False            # a caseless search is the caller's: lowercase the chunk

    def __init__(self, literals: Sequence[bytes]) -> None:
        self.literals = tuple(literals)
        self._bit = {lit: 1 << i for i, lit in enumerate(self.literals)}
        self._planned_on_data = False
        self._plan(b"")

    @property
    def passes(self) -> int:
        return len(self.scans)

    def _plan(self, sample: bytes) -> None:
        self.scans = plan_scans(self.literals, sample)
        self._masks = [sum(self._bit[lit] for lit in lits) for _scan, lits in self.scans]

    def candidates(self, chunk: bytes) -> tuple[list[int], list[int]]:
        if not self._planned_on_data and len(chunk) >= PLAN_SAMPLE:
            # Which bytes are rare depends on the site's log: plan once on real data.
            self._plan(chunk[:PLAN_SAMPLE])
            self._planned_on_data = True
        find, rfind = chunk.find, chunk.rfind
        hit_by: dict[int, int] = {}
        get = hit_by.get
        for (scan, _literals), mask in zip(self.scans, self._masks, strict=True):
            end = -1
            for hit in scan.finditer(chunk):
                pos = hit.start()
                if pos < end:
                    continue            # the rest of a line already taken
                start = rfind(b"\n", 0, pos) + 1
                end = find(b"\n", pos)
                # A literal in a line always makes its own scan hit that line (matches never
                # cross a newline), so the literals of the hitting scans are all it can hold.
                hit_by[start] = get(start, 0) | mask
                if end < 0:
                    break               # the last line, without a newline
        starts = sorted(hit_by)
        return starts, [hit_by[start] for start in starts]


Matcher = HyperscanMatcher | PivotMatcher


def make_matcher(literals: Sequence[bytes], kind: str = "auto", caseless: bool = False) -> Matcher:
    """The matcher `kind` names; "auto" is hyperscan when it is installed and works, else re.
    `caseless`: hyperscan may ignore ASCII case (its `caseless` then says so; re's never does)."""
    if kind not in MATCHERS:
        raise ValueError(f"matcher {kind!r} is not one of {', '.join(MATCHERS)}")
    if kind != "re" and _hyperscan is not None:
        try:
            return HyperscanMatcher(literals, caseless=True) if caseless else HyperscanMatcher(literals)
        except Exception as exc:  # e.g. a CPU without SSSE3 (hyperscan.error)
            if kind == "hyperscan":
                raise
            log.warning("hyperscan unusable (%s): using the slower re matcher", exc)
    elif kind == "hyperscan":
        raise RuntimeError("matcher 'hyperscan' asked for but the hyperscan module is not installed")
    return PivotMatcher(literals)


# Costs in microseconds, measured with CPython 3.11's sre: one pass looking for a pivot byte
# (its literal-prefix search) per ~130-byte log line, each occurrence of the pivot (a branch
# attempt, growing with the number of branches), and each match (a candidate line cut out).
PASS_COST = 0.035
OCCURRENCE_COST = 0.006
BRANCH_COST = 0.0012
MATCH_COST = 0.5
LINE_BYTES = 130
PLAN_SAMPLE = 1 << 18
MIN_TAIL = 3


def _static_frequencies() -> list[float]:
    """Rough byte frequencies of a mail log, used until the log itself has been seen."""
    freq = [0.002] * 256
    for ch in b"etaoinsrhldcumfpgwybvkxjqz":
        freq[ch] = 0.04
    for ch in b"etaoinsr":
        freq[ch] = 0.07
    for ch in b"0123456789":
        freq[ch] = 0.03
    for ch in b" .:=<>[],-/()@_":
        freq[ch] = 0.02
    freq[ord(" ")] = 0.15
    return freq


def plan_scans(literals: Iterable[bytes], sample: bytes = b"") -> list[tuple[re.Pattern[bytes], tuple[bytes, ...]]]:
    """Regex passes that together find every literal: [(pattern, literals it stands for)].

    A pass looks for one pivot byte followed by the rest of its literals, `U(?:ser unk|NKNOWN)`;
    a rare pivot shared by many literals covers them all in one pass. Weighted greedy set
    cover over pivot bytes; with a `sample` of the log, byte frequencies and how often each
    pivot-and-tail occurs are measured rather than guessed.
    """
    if sample:
        counts = Counter(sample)
        total = max(1, len(sample))
        freq = [counts.get(b, 0) / total for b in range(256)]
        lines = max(1, sample.count(b"\n"))
    else:
        freq = _static_frequencies()
    match_rate: dict[bytes, float] = {}

    def tail_matches(needle: bytes) -> float:
        """Matches per line of pivot+tail: measured in the sample, else assumed rare."""
        if not sample:
            return 0.0
        rate = match_rate.get(needle)
        if rate is None:
            rate = match_rate[needle] = sample.count(needle) / lines
        return rate

    uncovered = set(literals)
    plan: list[tuple[re.Pattern[bytes], tuple[bytes, ...]]] = []
    while uncovered:
        holders: dict[int, list[bytes]] = {}
        for lit in uncovered:
            # A pivot needs a few bytes after it, or every occurrence of the byte is a hit.
            usable = set(lit[:-MIN_TAIL]) if len(lit) > MIN_TAIL else set(lit[:1])
            for byte in usable:
                holders.setdefault(byte, []).append(lit)

        def cost(byte: int, holders: dict[int, list[bytes]] = holders) -> tuple[float, int]:
            group = holders[byte]
            matches = sum(tail_matches(lit[lit.index(byte):]) for lit in group)
            per_line = (PASS_COST + MATCH_COST * matches
                        + freq[byte] * LINE_BYTES * (OCCURRENCE_COST + BRANCH_COST * len(group)))
            return (per_line / len(group), byte)

        pivot = min(holders, key=cost)
        group = tuple(sorted(holders[pivot]))
        # Each literal contributes what follows its first pivot: its longest, rarest tail.
        tails = {lit[lit.index(pivot) + 1:] for lit in group}
        if b"" in tails:
            pattern = re.escape(bytes([pivot]))
        else:
            branches = sorted(tails, key=lambda t: (-len(t), t))
            pattern = re.escape(bytes([pivot])) + b"(?:" + b"|".join(map(re.escape, branches)) + b")"
        plan.append((re.compile(pattern), group))
        uncovered.difference_update(group)
    return plan
