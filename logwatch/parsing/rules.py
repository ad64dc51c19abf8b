"""Log rules as data: load rules/*.yaml, validate, compile once."""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from logwatch.parsing.events import (
    KINDS,
    MESSAGE_FIELDS,
    MESSAGE_KINDS,
    S25R,
    SERVICES,
    STUCK_SESSION,
)
from logwatch.parsing.rulecheck import (
    EVENT_FIELDS,
    MESSAGE_SAMPLE_FIELDS,
    Sample,
    check_rules,
    forbidden_constructs,
)
from logwatch.util.yamlsrc import YamlError, line_of, load_yaml

RULE_KINDS = tuple(k for k in KINDS if k not in (STUCK_SESSION, S25R))
ALL_RULE_KINDS = RULE_KINDS + MESSAGE_KINDS
_RULE_KEYS = {"id", "kind", "service", "programs", "prefilter", "regex", "service_map", "description",
              "samples"}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A prefilter must be rarer than this: these words occur on most mail-log lines.
_TOO_COMMON = {"from", "to", "mail", "smtp", "postfix", "dovecot", "user", "=", ":", " "}


class RuleError(Exception):
    """A broken rule file; the message names file, line, rule id and reason."""


class SelfTestError(RuleError):
    """Rules whose own samples or timing checks fail; `failures` counts them."""

    def __init__(self, message: str, failures: int) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True, eq=False)
class Rule:
    """One compiled log pattern."""

    id: str
    kind: str
    service: str | None
    programs: tuple[str, ...]
    prefilters: tuple[bytes, ...]
    regex: re.Pattern[str]
    service_map: dict[str, str] = field(default_factory=dict)
    source: str = ""              # "file:line", for messages
    samples: tuple[Sample, ...] = ()

    def applies_to(self, program: str) -> bool:
        return any(fnmatch.fnmatchcase(program, glob) for glob in self.programs)

    @property
    def is_message(self) -> bool:
        """A message rule (accounting's correlation), not an event rule (the engine's)."""
        return self.kind in MESSAGE_KINDS


class Ruleset:
    """The compiled rules in match order, plus the per-program index the parser uses.
    `rules` are the event rules (the engine's parser); `message_rules` the accounting's, kept
    apart so that they cost the event parser nothing (see messageparse.py)."""

    def __init__(self, rules: Sequence[Rule], files: Sequence[Path] = ()) -> None:
        self.rules = tuple(rule for rule in rules if not rule.is_message)
        self.message_rules = tuple(rule for rule in rules if rule.is_message)
        self.files = tuple(files)
        self.by_id = {rule.id: rule for rule in (*self.rules, *self.message_rules)}
        self.literals = tuple(sorted({lit for rule in self.rules for lit in rule.prefilters}))
        self._by_program: dict[str, tuple[Rule, ...]] = {}
        # fnmatch compiles (and caches) a glob on its first use: do it now, not on the path of
        # the first line of each program after a start (~2 ms for the shipped rules' globs).
        for glob in {glob for rule in self.rules for glob in rule.programs}:
            fnmatch.fnmatchcase("", glob)

    def for_program(self, program: str) -> tuple[Rule, ...]:
        """Rules that apply to a syslog program, in match order (memoised; programs are few)."""
        rules = self._by_program.get(program)
        if rules is None:
            rules = tuple(rule for rule in self.rules if rule.applies_to(program))
            if len(self._by_program) < 4096:
                self._by_program[program] = rules
        return rules

    def __len__(self) -> int:
        return len(self.rules)


def _fail(path: Path, line: int, rule_id: str | None, reason: str) -> RuleError:
    who = f" rule {rule_id!r}:" if rule_id else ""
    return RuleError(f"{path}:{line}:{who} {reason}")


def _str_list(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def _prefilters(value: object, fail: Callable[[str], RuleError]) -> list[str]:
    """A rule's prefilter literals: each long and rare enough to filter, none with a newline."""
    prefilters = _str_list(value)
    if prefilters is None:
        raise fail("prefilter must be a non-empty literal string or list of them")
    for literal in prefilters:
        if len(literal) < 3 or literal.strip().lower() in _TOO_COMMON:
            raise fail(f"prefilter {literal!r} is too short or too common to filter anything")
        if "\n" in literal:
            raise fail(f"prefilter {literal!r} holds a newline: no log line can hold it")
    return prefilters


def _regex(pattern: object, fail: Callable[[str], RuleError],
           message: bool = False) -> re.Pattern[str]:
    """A rule's compiled regex: plain constructs only, an ip group (a message rule: a qid
    group instead), no unknown named groups."""
    if not isinstance(pattern, str) or not pattern:
        raise fail("regex must be a non-empty string")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise fail(f"regex does not compile: {exc}") from exc
    bad = forbidden_constructs(pattern)
    if bad:
        raise fail(f"regex uses {' and '.join(bad)}: these behave differently across the "
                   "supported Python versions; write the plain equivalent (README, 'Log rules')")
    if message:
        if "qid" not in regex.groupindex:
            raise fail("a message rule's regex has no (?P<qid>...) group")
        allowed = set(MESSAGE_FIELDS)
    else:
        if "ip" not in regex.groupindex:
            raise fail("regex has no (?P<ip>...) group")
        allowed = {"ip", "user", "service"}
    extra = set(regex.groupindex) - allowed
    if extra:
        raise fail(f"unknown named group(s) {', '.join(sorted(extra))} (allowed: "
                   f"{', '.join(sorted(allowed))})")
    return regex


def _compile_rule(path: Path, index: int, raw: object, marks: dict) -> Rule:
    base = ("rules", index)
    line = line_of(marks, base)
    if not isinstance(raw, dict):
        raise _fail(path, line, None, "a rule must be a mapping")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID_RE.match(rule_id):
        raise _fail(path, line_of(marks, base + ("id",)), None,
                    f"missing or invalid id {rule_id!r} (letters, digits, '_', '.', '-')")

    def where(key: str) -> int:
        return line_of(marks, base + (key,))

    unknown = sorted(set(raw) - _RULE_KEYS, key=str)
    if unknown:
        raise _fail(path, where(str(unknown[0])), rule_id,
                    f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
    kind = raw.get("kind")
    if kind not in ALL_RULE_KINDS:
        raise _fail(path, where("kind"), rule_id,
                    f"kind {kind!r} is not one of {', '.join(ALL_RULE_KINDS)}")
    service = raw.get("service")
    if service is not None and service not in SERVICES:
        raise _fail(path, where("service"), rule_id,
                    f"service {service!r} is not one of {', '.join(SERVICES)}")
    programs = _str_list(raw.get("programs"))
    if programs is None:
        raise _fail(path, where("programs"), rule_id,
                    "programs must be a non-empty string or list of strings (syslog tags, globs)")
    prefilters = _prefilters(raw.get("prefilter"), lambda why: _fail(
        path, where("prefilter"), rule_id, why))
    regex = _regex(raw.get("regex"), lambda why: _fail(path, where("regex"), rule_id, why),
                   message=kind in MESSAGE_KINDS)
    service_map = raw.get("service_map") or {}
    if not isinstance(service_map, dict) or not all(
        isinstance(k, str) and v in SERVICES for k, v in service_map.items()
    ):
        raise _fail(path, where("service_map"), rule_id,
                    f"service_map must map strings to one of {', '.join(SERVICES)}")
    return Rule(
        id=rule_id,
        kind=kind,
        service=service,
        programs=tuple(programs),
        prefilters=tuple(p.encode() for p in prefilters),
        regex=regex,
        service_map={k.lower(): v for k, v in service_map.items()},
        source=f"{path}:{line}",
        samples=_samples(path, base, raw.get("samples"), marks, rule_id,
                         MESSAGE_SAMPLE_FIELDS if kind in MESSAGE_KINDS else EVENT_FIELDS),
    )


def _samples(path: Path, base: tuple, raw: object, marks: dict, rule_id: str,
             fields: tuple[str, ...] = EVENT_FIELDS) -> tuple[Sample, ...]:
    """The validated `samples:` list of a rule: at least one with an expected event."""
    where = line_of(marks, base + ("samples",))
    if not isinstance(raw, list) or not raw:
        raise _fail(path, where, rule_id, "samples: missing; every rule needs a list of "
                    "{line: full log line, expect: {field: value, ...} or null}, at least one "
                    "expecting an event")
    samples = []
    for index, item in enumerate(raw):
        at = line_of(marks, base + ("samples", index))
        if not isinstance(item, dict) or set(item) != {"line", "expect"}:
            raise _fail(path, at, rule_id, "a sample is a mapping with exactly the keys line "
                        "and expect")
        line, expect = item["line"], item["expect"]
        if not isinstance(line, str) or not line or "\n" in line:
            raise _fail(path, at, rule_id, "sample line must be one non-empty log line")
        if expect is not None:
            unknown = sorted(set(map(str, expect)) - set(fields)) if isinstance(
                expect, dict) else ["(not a mapping)"]
            if unknown or not expect:
                raise _fail(path, at, rule_id, f"sample expect must be null or a mapping of "
                            f"event fields ({', '.join(fields)}); bad: {unknown or '{}'}")
        samples.append(Sample(line, expect, f"{path}:{at}"))
    if all(s.expect is None for s in samples):
        raise _fail(path, where, rule_id, "samples: at least one must expect an event")
    return tuple(samples)


def load_rule_file(path: str | Path) -> list[Rule]:
    """Load and compile one rules/*.yaml file; RuleError names file, line, rule id and reason."""
    path = Path(path)
    try:
        data, marks = load_yaml(path)
    except YamlError as exc:
        raise RuleError(str(exc)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise _fail(path, 1, None, "a rule file is a mapping with a 'rules:' list")
    unknown = sorted(set(data) - {"rules", "description"}, key=str)
    if unknown:
        raise _fail(path, line_of(marks, (unknown[0],)), None, f"unknown top-level key {unknown[0]!r}")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(data["rules"]):
        rule = _compile_rule(path, index, raw, marks)
        if rule.id in seen:
            raise _fail(path, line_of(marks, ("rules", index)), rule.id,
                        f"duplicate id (first at line {seen[rule.id]})")
        seen[rule.id] = line_of(marks, ("rules", index))
        rules.append(rule)
    return rules


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def load_ruleset(dirs: Iterable[str | Path], local_dir: str | Path | None = None,
                 check: bool = True, probes: bool = True) -> Ruleset:
    """All rules of the given directories in file order; local_dir's rules replace by id or add.
    `check`: run every rule's samples (rulecheck) and, with `probes`, time them and the hostile
    probes; RuleError lists the failures."""
    rules: list[Rule] = []
    files: list[Path] = []
    origin: dict[str, Path] = {}
    found_dir = False
    for directory in map(Path, dirs):
        if not directory.is_dir():
            continue
        found_dir = True
        for path in _yaml_files(directory):
            files.append(path)
            for rule in load_rule_file(path):
                if rule.id in origin:
                    raise RuleError(f"{rule.source}: rule {rule.id!r}: id already defined in "
                                    f"{origin[rule.id]}")
                origin[rule.id] = path
                rules.append(rule)
    if not found_dir:
        raise RuleError(f"no rules directory found (looked in {', '.join(map(str, dirs))})")
    if local_dir is not None and Path(local_dir).is_dir():
        position = {rule.id: i for i, rule in enumerate(rules)}
        for path in _yaml_files(Path(local_dir)):
            files.append(path)
            for rule in load_rule_file(path):
                if rule.id in position:
                    rules[position[rule.id]] = rule
                else:
                    position[rule.id] = len(rules)
                    rules.append(rule)
    if check:
        problems = check_rules(rules, probes=probes)
        if problems:
            raise SelfTestError(f"{len(problems)} rule self-test failure(s) on Python "
                                f"{sys.version.split()[0]}:\n" + "\n".join(problems),
                                len(problems))
    return Ruleset(rules, files)


def default_rules_dirs() -> list[Path]:
    """Where the shipped rules live: inside the package, else the share dir (.deb, make install)."""
    from logwatch.daemon.config import DEFAULT_RULES_DIR

    candidates = [p for p in (packaged_rules_dir(),) if p is not None]
    candidates.append(Path(DEFAULT_RULES_DIR))
    return [p for p in candidates if p.is_dir()][:1] or candidates[:1]


def packaged_rules_dir() -> Path | None:
    """logwatch/shipped-rules, read through importlib.resources: in a wheel or .deb a directory
    of copies, in a source tree a symlink to rules/. None when not on a file system (a zip)."""
    from importlib.resources import files

    found = files("logwatch") / "shipped-rules"
    return found.resolve() if isinstance(found, Path) else None
