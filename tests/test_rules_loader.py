"""Rule files: validation errors name file, line, rule id and reason; local overrides."""

import textwrap
from pathlib import Path

import pytest

from logwatch.parsing.rules import RuleError, default_rules_dirs, load_rule_file, load_ruleset

GOOD = """\
rules:
  - id: demo-login
    kind: login
    programs: [dovecot]
    prefilter: "-login: Login: "
    regex: '^(?P<service>pop3|imap)-login: Login: user=<(?P<user>[^>]*)>, method=\\S+, rip=(?P<ip>[0-9a-fA-F.:]+), lip='
    samples:
      - line: 'Nov 21 10:00:00 mx dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1'
        expect: {kind: login, ip: 192.0.2.7, user: bob, service: pop3}
  - id: demo-unknown
    kind: user-unknown
    service: smtp
    programs: ["postfix*/smtpd"]
    prefilter: "User unknown"
    regex: '^NOQUEUE: reject: RCPT from [^\\[\\]\\s]*\\[(?P<ip>[0-9a-fA-F.:]+)\\]: 550 5\\.1\\.1 <(?P<user>[^>]*)>: Recipient address rejected: User unknown'
    samples:
      - line: 'Nov 21 10:00:01 mx postfix/smtpd[7]: NOQUEUE: reject: RCPT from x.example[192.0.2.8]: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown'
        expect: {kind: user-unknown, ip: 192.0.2.8, user: nobody@example.org}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_loads(tmp_path):
    rules = load_rule_file(write(tmp_path, "demo.yaml", GOOD))
    assert [r.id for r in rules] == ["demo-login", "demo-unknown"]
    assert rules[1].applies_to("postfix/submission/smtpd")
    assert rules[1].applies_to("postfix-incoming/smtpd")
    assert not rules[1].applies_to("postfix/smtp")


@pytest.mark.parametrize("old,new,line,reason", [
    ("kind: login\n", "kind: logged-in\n", 3, "kind 'logged-in' is not one of"),
    ("regex: '^(?P<service>", "regex: '^((?P<service>", 6, "regex does not compile"),
    ("rip=(?P<ip>[0-9a-fA-F.:]+)", "rip=(?P<addr>[0-9a-fA-F.:]+)", 6, "no (?P<ip>...) group"),
    ("prefilter: \"-login: Login: \"", "prefilter: \"from\"", 5, "too short or too common"),
    ("prefilter: \"-login: Login: \"", "prefilter: \"Login:\\nuser\"", 5, "newline"),
    ("programs: [dovecot]", "programs: []", 4, "programs must be"),
    ("    kind: login\n", "    kind: login\n    colour: red\n", 4, "unknown key 'colour'"),
])
def test_broken_rule_names_file_line_id_reason(tmp_path, old, new, line, reason):
    assert old in GOOD
    path = write(tmp_path, "broken.yaml", GOOD.replace(old, new, 1))
    with pytest.raises(RuleError) as err:
        load_rule_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert "'demo-login'" in message and reason in message


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "rules:\n  - id: x\n    kind: [unclosed\n")
    with pytest.raises(RuleError, match=rf"{path}:\d+: invalid YAML"):
        load_rule_file(path)


def test_duplicate_ids_across_files(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    with pytest.raises(RuleError, match="already defined"):
        load_ruleset([tmp_path])


def test_local_dir_overrides_and_adds_by_id(tmp_path):
    shipped = tmp_path / "shipped"
    local = tmp_path / "local"
    shipped.mkdir()
    local.mkdir()
    write(shipped, "demo.yaml", GOOD)
    write(local, "site.yaml", """\
        rules:
          - id: demo-unknown
            kind: rejected
            programs: [sm-mta]
            prefilter: "Nope nope"
            regex: '^x \\[(?P<ip>[0-9.]+)\\] Nope nope'
            samples:
              - {line: 'Nov 21 10:00:02 mx sm-mta[3]: x [192.0.2.9] Nope nope', expect: {kind: rejected}}
          - id: site-extra
            kind: auth-failed
            programs: [myd]
            prefilter: "bad password"
            regex: '^bad password from (?P<ip>[0-9.]+)$'
            samples:
              - {line: 'Nov 21 10:00:03 mx myd: bad password from 192.0.2.10', expect: {ip: 192.0.2.10}}
        """)
    rs = load_ruleset([shipped], local_dir=local)
    assert [r.id for r in rs.rules] == ["demo-login", "demo-unknown", "site-extra"]
    assert rs.by_id["demo-unknown"].kind == "rejected"


def test_missing_rules_dir_is_an_error(tmp_path):
    with pytest.raises(RuleError, match="no rules directory"):
        load_ruleset([tmp_path / "nope"])


def test_shipped_rules_load():
    rs = load_ruleset(default_rules_dirs())
    assert len(rs) > 0
    families = {p.stem for p in rs.files}
    for family in ("postfix", "sendmail", "dovecot", "courier", "cyrus", "uw-imap", "qpopper",
                   "exim", "perdition"):
        assert family in families, f"rules/{family}.yaml missing"


def test_program_globs_are_compiled_when_the_rules_load(monkeypatch):
    """The first line of each program after a start compiles no glob (it cost ~2 ms on the path
    of the first event): the Ruleset compiles them when it is built."""
    import dataclasses
    import re
    import secrets

    from logwatch.parsing.rules import Ruleset

    base = load_ruleset(default_rules_dirs(), check=False).rules[0]
    rule = dataclasses.replace(base, programs=(f"lwtest-{secrets.token_hex(8)}*",))
    rules = Ruleset([rule])
    compiled = []
    real = re.compile
    monkeypatch.setattr(re, "compile", lambda *a, **k: compiled.append(a) or real(*a, **k))
    assert rules.for_program(rule.programs[0][:-1] + "x") == (rule,)
    assert rules.for_program("other") == ()
    assert compiled == []
