"""Wrong-IP events over the injection suite: every template x every payload (and the pairs).

Prints, per rule family, the hostile lines tried, the events they gave and how many carried an
IP other than the real client's (the figure must be 0), plus the failure lines that gave no
event (misses). Run: .venv/bin/python bench/injection_bench.py
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_injection import PAYLOADS, REAL, TEMPLATES  # noqa: E402

from logwatch.parsing.events import SUCCESS_KINDS  # noqa: E402
from logwatch.parsing.parser import Parser  # noqa: E402
from logwatch.parsing.rules import load_ruleset  # noqa: E402


def family(template: str) -> str:
    """The daemon a template belongs to: the syslog tag up to '[', '/' or ':'."""
    tag = template.split(" ")[4] if template.count(" ") > 4 else "?"
    for sep in "[/:":
        tag = tag.split(sep)[0]
    return tag


def main() -> None:
    parser = Parser(load_ruleset([REPO / "rules"]), clock=lambda: 1795305600.0)
    payloads = PAYLOADS + [a + b for a in PAYLOADS[::2] for b in PAYLOADS[1::2]]
    lines, events, wrong, forged, misses = Counter(), Counter(), Counter(), Counter(), Counter()
    started = time.perf_counter()
    for template, may_succeed in TEMPLATES:
        fam = family(template)
        benign = parser.parse_line(template.replace("{P}", "alice").encode())
        for payload in payloads:
            event = parser.parse_line(template.replace("{P}", payload).encode())
            lines[fam] += 1
            if event is None:
                misses[fam] += benign is not None
                continue
            events[fam] += 1
            wrong[fam] += event.ip != REAL
            forged[fam] += (not may_succeed) and event.kind in SUCCESS_KINDS
    took = time.perf_counter() - started
    print(f"{'family':14s} {'lines':>7s} {'events':>7s} {'wrong IP':>9s} {'forged ok':>9s} {'no event':>9s}")
    for fam in sorted(lines):
        print(f"{fam:14s} {lines[fam]:7d} {events[fam]:7d} {wrong[fam]:9d} {forged[fam]:9d} {misses[fam]:9d}")
    print(f"{'total':14s} {sum(lines.values()):7d} {sum(events.values()):7d} {sum(wrong.values()):9d} "
          f"{sum(forged.values()):9d} {sum(misses.values()):9d}")
    print(f"{len(TEMPLATES)} templates x {len(payloads)} payloads (singles and pairs), {took:.1f} s")
    print("'no event': hostile lines of a template that matches with a harmless name but not with "
          "this payload (a refused ambiguous line, or a payload the daemon would not log as is)")


if __name__ == "__main__":
    main()
