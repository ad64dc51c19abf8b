"""Per-program plans of the message parser's row path (MessageParser.parse_rows).

A plan is one regex per program: the alternation, in file order, of the message rules that
apply to it, each in a group of its own, so that one match (at the message's offset in the
line) finds the rule the reference path finds (its first rule that matches) and gives the
fields positionally (engine.messages.ROW_FIELDS) with one m.group(*indexes): no dict per line.
Only patterns whose meaning cannot change by this are planned (line_safe()); a program with
another rule goes through the reference path whole.
"""

from __future__ import annotations

import re
import re._compiler as sre_compile
import re._constants as sre_c
import re._parser as sre_p
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from logwatch.engine.messages import ROW_FIELDS
from logwatch.parsing.rules import Rule

_NAME = re.compile(r"\(\?P<([A-Za-z_]\w*)>")
# An alternative that starts with this character cannot match a line without it: the plan's
# `plain` regex, for such lines, has none (the quoted form of an address, rare in real logs;
# its branch keeps sre from matching an address as one run of a character class).
RARE = '"'


class Alt(NamedTuple):
    """What a plan's match of one rule gives: its kind, the group indexes of ROW_FIELDS
    (an index that never matches for a field the rule has not), whether it has an ip, its
    prefilters (the reference path tries a rule only on a line holding one) and its id."""

    kind: str
    indexes: tuple[int, ...]
    has_ip: bool
    literals: tuple[str, ...] | None     # None: implied() (no need to look)
    rule_id: str


class Plan(NamedTuple):
    """A program's rules in one regex; `alts` by the lastindex of a match; `literals`: the
    rules' prefilters (a line holding none is no candidate of the reference path)."""

    match: Callable[[str, int], Any]
    plain: Callable[[str, int], Any]        # match(), for a line without RARE
    alts: dict[int, Alt]
    literals: tuple[str, ...]


def line_safe(rule: Rule) -> bool:
    """Whether the rule's pattern, anchored by a leading ^, matches the same at a line's
    offset as at the start of the message string cut from it, and keeps its meaning with its
    groups renamed: no other start anchor, no look-behind, no back-reference, no flags."""
    pattern = rule.regex.pattern
    if not pattern.startswith("^") or rule.regex.flags != re.UNICODE:
        return False
    try:
        tree = sre_p.parse(pattern)
    except re.error:
        return False
    first = True
    for op, av in _walk(tree):
        if first and op is sre_c.AT and av is sre_c.AT_BEGINNING:
            first = False
            continue
        first = False
        if op is sre_c.AT and av in (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING,
                                     sre_c.AT_BEGINNING_LINE):
            return False
        if op in (sre_c.ASSERT, sre_c.ASSERT_NOT) and av[0] < 0:
            return False
        if op in (sre_c.GROUPREF, sre_c.GROUPREF_EXISTS, sre_c.GROUPREF_IGNORE,
                  sre_c.GROUPREF_LOC_IGNORE, sre_c.GROUPREF_UNI_IGNORE):
            return False
        if op is sre_c.SUBPATTERN and (av[1] or av[2]):
            return False
    return True


def _walk(sub: Any) -> Iterator[tuple[Any, Any]]:
    """Every (op, argument) of a parsed pattern, depth first, in pattern order."""
    for op, av in sub:
        yield op, av
        yield from _walk_av(av)


def _walk_av(av: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(av, sre_p.SubPattern):
        yield from _walk(av)
    elif isinstance(av, (tuple, list)):
        for item in av:
            yield from _walk_av(item)


def text_literals(rules: list[Rule]) -> tuple[str, ...]:
    """The rules' prefilters as text (in an ASCII line as the bytes are in its bytes)."""
    return tuple(dict.fromkeys(lit.decode("utf-8", "replace") if isinstance(lit, bytes) else lit
                               for rule in rules for lit in rule.prefilters))


def build_plan(rules: list[Rule]) -> Plan | None:
    """The plan of a program's rules (in file order); None when one is not line_safe()."""
    if not all(line_safe(rule) for rule in rules):
        return None
    parts = []
    for i, rule in enumerate(rules):
        body, renamed = _NAME.subn(lambda m, i=i: f"(?P<r{i}_{m.group(1)}>", rule.regex.pattern[1:])
        if renamed != len(rule.regex.groupindex):     # "(?P<" that is no group: not renamed
            return None
        parts.append(f"(?P<r{i}>{body})")
    # A last alternative that never matches (a line has no newline): its group is the index
    # of the fields a rule has not (None in every match).
    pattern = "|".join([*parts, "(?P<none>\n)"])
    regex = re.compile(pattern)
    index = regex.groupindex
    alts = {}
    for i, rule in enumerate(rules):
        names = rule.regex.groupindex
        alts[index[f"r{i}"]] = Alt(
            rule.kind,
            tuple(index[f"r{i}_{f}"] if f in names else index["none"] for f in ROW_FIELDS),
            "ip" in names, None if implied(rule) else text_literals([rule]), rule.id)
    return Plan(regex.match, without_rare(pattern, regex), alts, text_literals(rules))


def implied(rule: Rule) -> bool:
    """Whether a match of the rule's pattern holds one of its prefilters (then a line it
    matches is one the reference path tries it on): a prefilter within a run of literal
    characters that every match has (not in a repeat, a branch or an assertion)."""
    runs = _runs(sre_p.parse(rule.regex.pattern))
    return any(lit in run for lit in text_literals([rule]) for run in runs)


def _runs(sub: Any) -> list[str]:
    """The runs of literal characters of a parsed pattern's sequence (and its groups')."""
    runs, run = [], []
    for op, av in sub:
        if op is sre_c.LITERAL:
            run.append(chr(av))
            continue
        runs.append("".join(run))
        run = []
        if op is sre_c.SUBPATTERN:
            runs += _runs(av[3])
    return [*runs, "".join(run)]


def without_rare(pattern: str, regex: re.Pattern[str]) -> Callable[[str, int], Any]:
    """The match of `pattern` without its alternatives that start with RARE: the same on a
    line without RARE (regex's own when sre's parser is not what we know)."""
    try:
        tree = sre_p.parse(pattern)
        _prune(tree, ord(RARE))
        plain = sre_compile.compile(tree, regex.flags)
    except Exception:       # noqa: BLE001 - sre's internals changed: no faster form
        return regex.match
    if plain.groupindex != regex.groupindex or plain.groups != regex.groups:
        return regex.match
    return plain.match


def _prune(sub: Any, rare: int) -> None:
    """Drop (in place) the alternatives of sub's branches that start with the literal `rare`;
    a branch left with one alternative becomes that alternative (which sre then runs as a
    repeat of one character class where it is one)."""
    data = []
    for op, av in sub.data:
        if op is sre_c.BRANCH:
            alts = [alt for alt in av[1]
                    if not (alt.data and alt.data[0] == (sre_c.LITERAL, rare))]
            for alt in alts:
                _prune(alt, rare)
            if len(alts) == 1:
                data.extend(alts[0].data)
                continue
            if not alts:
                data.append((sre_c.FAILURE, None))
                continue
            av = (av[0], alts)
        else:
            for child in _children(av):
                _prune(child, rare)
        data.append((op, av))
    sub.data = data


def _children(av: Any) -> Iterator[Any]:
    if isinstance(av, sre_p.SubPattern):
        yield av
    elif isinstance(av, (tuple, list)):
        for item in av:
            yield from _children(item)
