"""Config loader: defaults, the shipped example, every error naming file, line and key, flags."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from logwatch.daemon.app import absolute_args, build_parser
from logwatch.daemon.config import (
    SECTIONS,
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
    section_keys,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "etc" / "logwatchd.yaml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "logwatchd.yaml"
    path.write_text(text)
    return str(path)


def errors(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "# only a comment\n")) == Config()


def test_missing_default_file_gives_defaults(tmp_path):
    assert load_config(str(tmp_path / "absent.yaml"), missing_ok=True) == Config()
    msgs = errors(str(tmp_path / "absent.yaml"))
    assert msgs == [f"{tmp_path / 'absent.yaml'}: (file): no such file"]


def test_shipped_example_documents_every_key_with_its_default():
    # The one key the example sets: the status page on loopback (issue 16).
    expected = Config()
    expected.web.listen = "127.0.0.1:9189"
    assert load_config(str(EXAMPLE)) == expected
    text = EXAMPLE.read_text()
    for name, cls in SECTIONS.items():
        assert re.search(rf"^{name}:", text, re.M), name
        for key in section_keys(cls):
            assert re.search(rf"^  {key}:", text, re.M), f"{name}.{key} not in example"


def test_values_are_read_and_ints_become_floats(tmp_path):
    cfg = load_config(write(tmp_path, """
sources:
  logfiles: [/var/log/mail.log, /var/log/dovecot.log]
relay:
  grace: 60
  map: lmdb:/etc/postfix/relay
  mynetworks: [127.0.0.0/8, "::1/128"]
bans:
  weights: {relay-denied: 5}
  permanent_after: 3
firewall:
  backend: nftables
  ports: [25, 587]
daemon:
  actions_log: null
"""))
    assert cfg.sources.logfiles == ["/var/log/mail.log", "/var/log/dovecot.log"]
    assert cfg.relay.grace == 60.0 and isinstance(cfg.relay.grace, float)
    assert cfg.relay.map == "lmdb:/etc/postfix/relay"
    assert cfg.relay.mynetworks == ["127.0.0.0/8", "::1/128"]
    # A partial weights mapping keeps the other defaults.
    assert cfg.bans.weights["relay-denied"] == 5 and cfg.bans.weights["user-unknown"] == 1
    assert cfg.bans.permanent_after == 3
    assert cfg.firewall.backend == "nftables" and cfg.firewall.ports == [25, 587]
    assert cfg.daemon.actions_log is None
    assert cfg.bans.bantime == 3600.0          # untouched keys keep their default


@pytest.mark.parametrize("text, line, key, words", [
    ("relay:\n  grace: -5\n", 2, "relay.grace", "greater than 0"),
    ("bans:\n  bantime: 0\n", 2, "bans.bantime", "greater than 0"),
    ("watchdog:\n  limit: -1\n", 2, "watchdog.limit", "negative"),
    ("relay:\n  map: btree:/etc/postfix/x\n", 2, "relay.map", "hash, lmdb"),
    ("relay:\n  map: hash:relative/path\n", 2, "relay.map", "absolute"),
    ("relay:\n  map: /etc/postfix/x\n", 2, "relay.map", "TYPE:PATH"),
    ("relay:\n  mynetworks: [10.0.0.0/8, 300.1.1.0/24]\n", 2, "relay.mynetworks", "300.1.1.0/24"),
    ("relay:\n  exclude: [not-a-net]\n", 2, "relay.exclude", "not-a-net"),
    ("firewall:\n  backend: pf\n", 2, "firewall.backend", "iptables, ipset, nftables, none"),
    ("rules:\n  matcher: grep\n", 2, "rules.matcher", "auto, hyperscan, re"),
    ("firewall:\n  ports: [25, 70000]\n", 2, "firewall.ports", "70000"),
    ("firewall:\n  ports: []\n", 2, "firewall.ports", "empty"),
    ("firewall:\n  ports: 25\n", 2, "firewall.ports", "list"),
    ("firewall:\n  chain: 'bad chain'\n", 2, "firewall.chain", "bad chain"),
    ("bans:\n  maxretry: five\n", 2, "bans.maxretry", "number"),
    ("bans:\n  ipv6_prefix: 200\n", 2, "bans.ipv6_prefix", "between"),
    ("bans:\n  weights: {guessing: 1}\n", 2, "bans.weights", "guessing"),
    ("bans:\n  enabled: yes please\n", 2, "bans.enabled", "true or false"),
    ("daemon:\n  log: journald\n", 2, "daemon.log", "syslog, stderr"),
    ("daemon:\n  state_dir: var/lib\n", 2, "daemon.state_dir", "absolute"),
    ("watchdog:\n  patterns: ['(unclosed']\n", 2, "watchdog.patterns", "regular expression"),
    ("sources:\n  max_line: 1.5\n", 2, "sources.max_line", "integer"),
    ("\n\nrelay:\n  services: [pop3, gopher]\n", 4, "relay.services", "gopher"),
    ("relay:\n  grace: 5\n  colour: blue\n", 3, "relay.colour", "unknown key"),
    ("relays:\n  grace: 5\n", 1, "relays", "unknown section"),
    ("relay: 5\n", 1, "relay", "mapping"),
    ("bans:\n  bantime: 7200\n  max_bantime: 3600\n", 3, "bans.max_bantime", "bantime"),
    ("relay:\n  grace: 5\n  grace: 6\n", 3, "relay.grace", "twice"),
])
def test_errors_name_file_line_and_key(tmp_path, text, line, key, words):
    path = write(tmp_path, text)
    msgs = errors(path)
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"{path}:{line}: {key}: "), msgs[0]
    assert words in msgs[0]


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "relay:\n  grace: 5\n  map: [unclosed\n")
    (msg,) = errors(path)
    assert msg.startswith(f"{path}:") and "invalid YAML" in msg
    assert re.match(rf"{re.escape(path)}:\d+: ", msg)


def test_all_errors_are_reported_at_once(tmp_path):
    path = write(tmp_path, "relay:\n  grace: -1\nfirewall:\n  backend: pf\n  nope: 1\n")
    msgs = errors(path)
    assert [m.split(": ")[1] for m in msgs] == ["relay.grace", "firewall.backend", "firewall.nope"]
    assert [m.split(":")[1] for m in msgs] == ["2", "4", "5"]


def test_top_level_must_be_a_mapping(tmp_path):
    (msg,) = errors(write(tmp_path, "- a\n- b\n"))
    assert "(top level)" in msg


def test_no_source_at_all_is_an_error_unless_a_flag_gives_one():
    cfg = parse_config("sources:\n  logfiles: []\n", "x.yaml")
    with pytest.raises(ConfigError, match="sources.logfiles"):
        apply_overrides(cfg, _args())
    assert apply_overrides(cfg, _args("--stdin")).sources.stdin


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_flags_override_the_file(tmp_path):
    cfg = load_config(write(tmp_path, "relay:\n  grace: 60\nfirewall:\n  backend: ipset\n"))
    cfg = apply_overrides(cfg, _args(
        "--logfile", "/var/log/a.log", "--logfile", "/var/log/b.log", "--state-dir", "/srv/state",
        "--relay-map", "lmdb:/etc/postfix/pbs", "--grace", "99", "--firewall", "nftables",
        "--chain", "MYCHAIN", "--ports", "25,465, 587", "--maxretry", "3", "--findtime", "30",
        "--bantime", "120", "--whitelist", "/etc/wl", "--watchdog-limit", "0",
        "--socket", "/tmp/s.sock", "--dry-run", "--from-start"))
    assert cfg.sources.logfiles == ["/var/log/a.log", "/var/log/b.log"]
    assert cfg.daemon.state_dir == "/srv/state"
    assert cfg.relay.map == "lmdb:/etc/postfix/pbs" and cfg.relay.grace == 99.0
    assert cfg.firewall.backend == "nftables" and cfg.firewall.chain == "MYCHAIN"
    assert cfg.firewall.ports == [25, 465, 587]
    assert (cfg.bans.maxretry, cfg.bans.findtime, cfg.bans.bantime) == (3.0, 30.0, 120.0)
    assert cfg.bans.whitelist == "/etc/wl"
    assert cfg.watchdog.limit == 0.0 and not cfg.watchdog.enabled
    assert cfg.daemon.socket == "/tmp/s.sock" and cfg.daemon.dry_run
    assert cfg.sources.from_start


def test_no_flags_change_nothing(tmp_path):
    cfg = load_config(write(tmp_path, "relay:\n  grace: 60\n"))
    assert apply_overrides(cfg, _args()).relay.grace == 60.0
    assert apply_overrides(Config(), _args()) == Config()


def test_relative_paths_in_flags_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(Config(), _args("--logfile", "mail.log", "--state-dir", "st"))
    assert cfg.sources.logfiles == [str(tmp_path / "mail.log")]
    assert cfg.daemon.state_dir == str(tmp_path / "st")


def test_stdin_flag_alone_reads_only_stdin():
    cfg = apply_overrides(Config(), _args("--stdin"))
    assert cfg.sources.stdin and cfg.sources.logfiles == []


@pytest.mark.parametrize("argv, key", [
    (["--ports", "25,x"], "--ports (firewall.ports)"),
    (["--ports", "0"], "--ports (firewall.ports)"),
    (["--relay-map", "cdb:/x"], "--relay-map (relay.map)"),
    (["--chain", "has space"], "--chain (firewall.chain)"),
])
def test_bad_flags_name_the_flag(argv, key):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), _args(*argv))
    (problem,) = info.value.problems
    assert problem.file == "<command line>" and problem.key == key


@pytest.mark.parametrize("argv", [["--grace", "-3"], ["--bantime", "0"]])
def test_bad_duration_flags_are_usage_errors_naming_the_flag(argv, capsys):
    # Duration flags are parsed by logwatch.util.duration in argparse (units: 30m, 1h, 7d).
    with pytest.raises(SystemExit) as info:
        _args(*argv)
    assert info.value.code == 2
    assert f"argument {argv[0]}: must be greater than 0" in capsys.readouterr().err


@pytest.mark.parametrize("text, key", [
    ("relay:\n  grace: .inf\n", "relay.grace"),
    ("bans:\n  maxretry: .nan\n", "bans.maxretry"),
    ("watchdog:\n  grace: .inf\n", "watchdog.grace"),
    ("bans:\n  weights:\n    user-unknown: .nan\n", "bans.weights"),
    ("bans:\n  weights:\n    auth-failed: .inf\n", "bans.weights"),
])
def test_infinite_and_nan_numbers_are_refused(tmp_path, text, key):
    [problem] = errors(write(tmp_path, text))
    assert key in problem and "finite" in problem


def test_deeply_nested_yaml_is_a_config_error_naming_the_file(tmp_path):
    path = write(tmp_path, "relay:\n  mynetworks: " + "[" * 100000 + "\n")
    [problem] = errors(path)
    assert problem.startswith(path) and "nested too deeply" in problem


def test_path_flags_stay_right_after_daemonize_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["--logfile", "mail.log", "--whitelist", "wl",
                                      "--rules", "r", "--config", "c.yaml", "--socket", "s",
                                      "--actions-log", "a.log", "--pidfile", "p"])
    absolute_args(args)
    monkeypatch.chdir("/")     # what --daemonize does before any reload re-applies the flags
    cfg = apply_overrides(Config(), args)
    assert cfg.sources.logfiles == [str(tmp_path / "mail.log")]
    assert cfg.bans.whitelist == str(tmp_path / "wl")
    assert cfg.rules.dirs == [str(tmp_path / "r")]
    assert cfg.daemon.socket == str(tmp_path / "s")
    assert cfg.daemon.actions_log == str(tmp_path / "a.log")
    assert cfg.daemon.pidfile == str(tmp_path / "p")
    assert args.config == str(tmp_path / "c.yaml")


def test_matcher_hyperscan_without_the_module_is_a_config_error(tmp_path, monkeypatch):
    from logwatch.daemon import configcheck

    path = write(tmp_path, "rules:\n  matcher: hyperscan\n")
    monkeypatch.setattr(configcheck, "hyperscan_available", lambda: False)
    msgs = errors(path)
    assert len(msgs) == 1 and msgs[0].startswith(f"{path}:2: rules.matcher: ")
    assert "not installed" in msgs[0]
    assert load_config(write(tmp_path, "rules:\n  matcher: re\n")).rules.matcher == "re"


def test_accounting_section_reads_its_keys(tmp_path):
    cfg = load_config(write(tmp_path, """
accounting:
  enabled: true
  stats_log: /tmp/stats.log
  suspend_time: 2h
  suspend_action: REJECT
  sasl_access_map: lmdb:/etc/postfix/sasl
  never_suspend: [newsletter@example.org]
"""))
    acc = cfg.accounting
    assert (acc.enabled, acc.stats_log, acc.suspend_time, acc.suspend_action) == (
        True, "/tmp/stats.log", 7200.0, "REJECT")
    assert acc.sasl_access_map == "lmdb:/etc/postfix/sasl"
    assert acc.never_suspend == ["newsletter@example.org"]


@pytest.mark.parametrize("text, key", [
    ("accounting:\n  suspend_action: DISCARD\n", "accounting.suspend_action"),
    ("accounting:\n  stats_log: stats.log\n", "accounting.stats_log"),
    ("accounting:\n  sasl_access_map: btree:/x\n", "accounting.sasl_access_map"),
    ("accounting:\n  never_suspend: ['a b']\n", "accounting.never_suspend"),
    ("accounting:\n  max_open: 0\n", "accounting.max_open"),
])
def test_bad_accounting_keys_are_named(tmp_path, text, key):
    assert any(f": {key}: " in m for m in errors(write(tmp_path, text)))


def test_stats_log_flag_none_disables_and_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["--stats-log", "s.log", "--sasl-access-map",
                                      "lmdb:/etc/postfix/s"])
    cfg = apply_overrides(Config(), args)
    assert cfg.accounting.stats_log == str(tmp_path / "s.log")
    assert cfg.accounting.sasl_access_map == "lmdb:/etc/postfix/s"
    cfg = apply_overrides(Config(), build_parser().parse_args(["--stats-log", "none"]))
    assert cfg.accounting.stats_log is None
