"""`logwatchctl parse` and `logwatchctl test-rules`: the daemon's parser run over files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from logwatch.parsing.diagnostics import Diagnostics
from logwatch.parsing.literalscan import MATCHERS
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import RuleError, Ruleset, default_rules_dirs, load_ruleset

CHUNK = 1 << 19     # 512 KiB: the chunk's several passes stay in the CPU cache (4 MiB: ~5-15% slower)


def add_rules_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", metavar="DIR", action="append",
                        help="rules directory (repeatable; default: the shipped rules)")
    parser.add_argument("--matcher", choices=MATCHERS, default="auto",
                        help="literal matcher: hyperscan, re, or auto (hyperscan if installed)")


def add_parse_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    add_rules_arg(parser)
    parser.add_argument("files", nargs="+", metavar="FILE", help="log file, or - for stdin")


def add_test_rules_args(parser: argparse.ArgumentParser) -> None:
    add_rules_arg(parser)
    parser.add_argument("--sample", type=int, default=20, metavar="N",
                        help="how many unmatched failure-looking lines to show (default 20)")
    parser.add_argument("file", metavar="FILE", help="log file, or - for stdin")


def _ruleset(args: argparse.Namespace) -> Ruleset | None:
    """The rules to run (--rules or the shipped ones); None after reporting a broken file."""
    try:
        # The samples still catch a rule this interpreter switched off; the hostile-line
        # timing is the daemon's and check-config's job (0.45 s that a one-off run need not pay).
        return load_ruleset(args.rules or default_rules_dirs(), probes=False)
    except RuleError as exc:
        print(f"logwatchctl: {exc}", file=sys.stderr)
        return None


def _open(name: str) -> BinaryIO:
    return sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115


def read_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """Chunks of whole lines (the last one may lack its newline)."""
    rest = b""
    while True:
        block = stream.read(size)
        if not block:
            break
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        if cut:
            yield block[:cut]
    if rest:
        yield rest


def _format(event, out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(event.as_json(), ensure_ascii=False) + "\n")
        return
    fields = [event.time.isoformat(), event.kind, event.ip]
    for key in ("user", "service", "program", "rule", "host"):
        value = getattr(event, key)
        if value is not None:
            fields.append(f"{key}={value!r}" if any(c.isspace() for c in value) else f"{key}={value}")
    fields.append(f"line={event.line}")
    out.write(" ".join(fields) + "\n")


def _parser(ruleset: Ruleset, args: argparse.Namespace) -> Parser | None:
    try:
        return Parser(ruleset, matcher=args.matcher)
    except RuntimeError as exc:         # --matcher hyperscan without the module
        print(f"logwatchctl: {exc}", file=sys.stderr)
        return None


def cmd_parse(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print one event per line of the given files."""
    ruleset = _ruleset(args)
    if ruleset is None:
        return 2
    status = 0
    for name in args.files:
        parser = _parser(ruleset, args)
        if parser is None:
            return 2
        try:
            with _open(name) as stream:
                line_no = 1
                for chunk in read_chunks(stream):
                    for event in parser.parse(chunk, line_no):
                        _format(event, out, args.json)
                    line_no += chunk.count(b"\n")
        except BrokenPipeError:
            raise           # our stdout, not the file: logwatchctl's main ends quietly
        except OSError as exc:
            print(f"logwatchctl: {name}: {exc.strerror or exc}", file=sys.stderr)
            status = 2
    return status


def cmd_test_rules(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """fail2ban-regex-like report: what the rules find in a file, and what they seem to miss."""
    began = time.perf_counter()
    ruleset = _ruleset(args)
    if ruleset is None:
        return 2
    parser = _parser(ruleset, args)
    if parser is None:
        return 2
    # The report's extras (framing of every line, failure-looking lines) are not on the
    # daemon's path; they are only for the admin reading this, found with the same matcher.
    check = Diagnostics(parser.framer, parser.matcher.name, args.sample)
    matched_lines: set[int] = set()
    parse_seconds = 0.0
    try:
        with _open(args.file) as stream:
            line_no = 1
            for chunk in read_chunks(stream):
                started = time.process_time()
                events, starts = parser.parse_marked(chunk, line_no)
                parse_seconds += time.process_time() - started
                matched_lines.update(e.line for e in events)
                check.scan(chunk, line_no, matched_lines, starts)
                # The parser counted the chunk's lines (one more only for a last line without
                # newline, after which no chunk comes): no second pass over 4 MiB to count.
                line_no = parser.stats.lines + 1
    except OSError as exc:
        print(f"logwatchctl: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    _report(out, ruleset, parser, check, parse_seconds, time.perf_counter() - began)
    return 0


def _report(out: TextIO, ruleset: Ruleset, parser: Parser, check: Diagnostics,
            parse_seconds: float, wall: float) -> None:
    """The test-rules report: counts, rates, events by kind and rule, what looks missed."""
    stats = parser.stats
    w = out.write
    w(f"Rules:        {len(ruleset)} from {len(ruleset.files)} files\n")
    w(f"Lines read:   {stats.lines}\n")
    rate = stats.lines / parse_seconds if parse_seconds > 0 else float("inf")
    passes = parser.matcher.passes
    w(f"Parse time:   {parse_seconds:.3f} s CPU ({rate:,.0f} lines/s; {parser.matcher.name} "
      f"matcher, {passes} pass{'es' if passes != 1 else ''})\n")
    rate = stats.lines / wall if wall > 0 else float("inf")
    w(f"Wall time:    {wall:.3f} s ({rate:,.0f} lines/s: rules loaded, file read, parsed "
      f"and checked)\n")
    w(f"Candidates:   {stats.candidates} lines held a rule's literal\n")
    w(f"Events:       {stats.events}\n")
    if stats.invalid_ip:
        w(f"Invalid IPs:  {stats.invalid_ip} matches dropped (no valid client address)\n")
    if stats.too_long:
        w(f"Too long:     {stats.too_long} lines over {parser.max_message} characters skipped\n")
    for rule_id, count in stats.over_budget.items():
        w(f"Over budget:  {rule_id} took over {parser.budget * 1000:.0f} ms on a line "
          f"{count}x, then quarantined ({stats.quarantined_lines} lines not tried)\n")
    w("\nEvents by kind:\n")
    for kind, count in sorted(stats.by_kind.items(), key=lambda kv: (-kv[1], kv[0])):
        w(f"  {count:>9}  {kind}\n")
    w("\nMatches by rule:\n")
    for rule in ruleset.rules:
        count = stats.by_rule.get(rule.id, 0)
        if count:
            w(f"  {count:>9}  {rule.id}  ({rule.kind})\n")
    unused = [r.id for r in ruleset.rules if not stats.by_rule.get(r.id)]
    w(f"  ({len(unused)} rules matched nothing)\n")
    found = check.findings
    w(f"\nLines not understood (unknown syslog framing): {found.unframed_count}\n")
    for number, raw in found.unframed:
        w(f"  {number}: {_show(raw)}\n")
    w(f"\nUnmatched lines that look like failures: {found.suspect_count}\n")
    for number, raw in found.suspects:
        w(f"  {number}: {_show(raw)}\n")
    if found.suspect_count:
        w("  (add a rule for a format you want counted: see README, 'Rules')\n")


def _show(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "..."


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry for `python -m logwatch.cli.ruletest parse|test-rules ...`."""
    top = argparse.ArgumentParser(prog="logwatch-ruletest")
    sub = top.add_subparsers(dest="command", required=True)
    add_parse_args(sub.add_parser("parse"))
    add_test_rules_args(sub.add_parser("test-rules"))
    args = top.parse_args(argv)
    return cmd_parse(args) if args.command == "parse" else cmd_test_rules(args)


if __name__ == "__main__":
    sys.exit(main())

