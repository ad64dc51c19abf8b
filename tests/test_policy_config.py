"""policy.* keys, the quotas list and the flags: values, defaults, and errors naming file,
line and key."""

from __future__ import annotations

import argparse

import pytest

from logwatch.daemon.config import ConfigError, apply_overrides, parse_config
from logwatch.daemon.main import build_parser

EXAMPLE = """\
policy:
  listen: inet:127.0.0.1:10040
  s25r: defer
  sasl_block_list: /etc/logwatchd/sasl-block
quotas:
  - {name: user-rcpt, key: sasl_username, count: recipients, limit: 3, period: 60, action: defer}
  - name: bulk-bytes
    key: sender_domain
    count: bytes
    limit: 100000000
    period: 1d
    action: hold
    profiles: /etc/logwatchd/quota-profiles
"""


def test_the_issue_example_parses() -> None:
    cfg = parse_config(EXAMPLE, "x.yaml")
    assert cfg.policy.listen == "inet:127.0.0.1:10040" and cfg.policy.s25r == "defer"
    assert [(q.name, q.limit, q.period, q.action) for q in cfg.quotas] == [
        ("user-rcpt", 3, 60.0, "defer"), ("bulk-bytes", 100000000, 86400.0, "hold")]
    assert parse_config("policy:\n  s25r: off\n").policy.s25r == "off"     # YAML's false
    assert parse_config("policy:\n  s25r: on\n").policy.s25r == "on"
    defaults = parse_config("")
    assert defaults.policy.listen is None and defaults.quotas == []
    assert defaults.policy.banned_action == "REJECT 5.7.1 Access denied"
    assert defaults.policy.on_error == "DUNNO"
    assert defaults.policy.audit_retention == 30 * 86400
    assert defaults.bans.weights["s25r"] == 0.5


@pytest.mark.parametrize("text, where", [
    ("policy:\n  listen: tcp:1\n", "x.yaml:2: policy.listen"),
    ("policy:\n  s25r: maybe\n", "x.yaml:2: policy.s25r"),
    ("policy:\n  on_error: \"DUNNO\\nOK\"\n", "x.yaml:2: policy.on_error"),
    ("policy:\n  sasl_access_map: btree:/x\n", "x.yaml:2: policy.sasl_access_map"),
    ("policy:\n  bogus: 1\n", "x.yaml:2: policy.bogus"),
    ("quotas: 3\n", "x.yaml:1: quotas"),
    ("quotas:\n  - {name: a, key: ip, count: messages, limit: 1, period: 1}\n",
     "x.yaml:2: quotas[0].key"),
    ("quotas:\n  - name: a\n    key: sender\n    count: messages\n    limit: x\n    period: 1\n",
     "x.yaml:5: quotas[0].limit"),
    ("quotas:\n  - {name: a, key: sender, count: messages, limit: 1, period: -5}\n",
     "x.yaml:2: quotas[0].period"),
    ("quotas:\n  - {name: a, key: sender, count: messages, limit: 1}\n",
     "x.yaml:2: quotas[0]: missing period"),
    ("quotas:\n  - {name: a, key: sender, count: messages, limit: 1, period: 1, x: 1}\n",
     "x.yaml:2: quotas[0].x"),
    ("quotas:\n  - {name: a, key: sender, count: messages, limit: 1, period: 1}\n"
     "  - {name: a, key: sender, count: bytes, limit: 1, period: 1}\n",
     "x.yaml:3: quotas[1].name"),
])
def test_errors_name_file_line_and_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    assert where in str(err.value), str(err.value)


def test_flags_override(tmp_path) -> None:
    args = build_parser().parse_args(["--policy-listen", "unix:/run/x.sock",
                                      "--sasl-block-list", "rel/block"])
    cfg = apply_overrides(parse_config(""), args)
    assert cfg.policy.listen == "unix:/run/x.sock"
    assert cfg.policy.sasl_block_list.startswith("/") and cfg.policy.sasl_block_list.endswith(
        "rel/block")
    with pytest.raises(ConfigError) as err:
        apply_overrides(parse_config(""), argparse.Namespace(policy_listen="nowhere"))
    assert "--policy-listen (policy.listen)" in str(err.value)


def test_check_config_reports_bad_list_lines(tmp_path) -> None:
    import subprocess
    import sys

    from daemon_harness import pyenv

    block, black = tmp_path / "block", tmp_path / "black"
    block.write_text("ok@example.org\nbad id\n")
    black.write_text("^fine$\n(unclosed\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"rules: {{local_dir: null}}\nbans: {{whitelist: null}}\npolicy:\n"
                   f"  sasl_block_list: {block}\n  s25r_blacklist: {black}\n"
                   f"  s25r_whitelist: {tmp_path}/missing\n")
    proc = subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "check-config", str(cfg)],
                          capture_output=True, text=True, env=pyenv(), timeout=60)
    assert proc.returncode == 1
    assert f"{block}: line 2:" in proc.stderr and f"{black}: line 2:" in proc.stderr
    assert f"{tmp_path}/missing: cannot read" in proc.stderr
