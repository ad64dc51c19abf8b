"""logwatchctl verdicts / policy-test: the policy service's audit and a dry decision."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from logwatch.clock import Clock, wall

MAX_STDIN = 64 * 1024


def read_request(text: str) -> dict[str, str]:
    """name=value lines (an empty line ends the request; blank lines before it are skipped)."""
    attrs: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if attrs:
                break
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"not a name=value line: {line[:80]!r}")
        attrs[name.strip()] = value
    return attrs


def format_verdicts(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        when = datetime.fromtimestamp(r["decided_at"]).strftime("%Y-%m-%d %H:%M:%S")
        who = r.get("client_address") or "-"
        if r.get("client_name"):
            who += f" ({r['client_name']})"
        extra = " ".join(f"{k}={r[k]}" for k in ("sasl_username", "sender", "recipient",
                                                 "queue_id") if r.get(k))
        lines.append(f"{when}  {r['rule']:<16} {who}  {extra}  -> {r['action']}")
    return "\n".join([*lines, f"{len(rows)} verdict(s)"])


def run_policy(args: argparse.Namespace, call: Callable[[argparse.Namespace, dict], dict],
               clock: Clock = wall) -> int:
    if args.command == "verdicts":
        req: dict[str, Any] = {"cmd": "verdicts", "limit": args.limit}
        if args.since is not None:
            req["since"] = clock() - args.since
        if args.ip:
            req["ip"] = args.ip
        if args.user:
            req["user"] = args.user
    else:
        try:
            attrs = read_request(sys.stdin.read(MAX_STDIN))
        except ValueError as exc:
            print(f"logwatchctl policy-test: {exc}", file=sys.stderr)
            return 2
        attrs.setdefault("request", "smtpd_access_policy")
        req = {"cmd": "policy-test", "attrs": attrs}
    resp = call(args, req)
    if not resp.get("ok"):
        print(f"logwatchctl: {resp.get('error', args.command + ' failed')}", file=sys.stderr)
        return 1
    if args.json:
        payload = resp["verdicts"] if args.command == "verdicts" else {
            "rule": resp["rule"], "action": resp["action"]}
        print(json.dumps(payload, indent=2, sort_keys=True))
    elif args.command == "verdicts":
        print(format_verdicts(resp["verdicts"]))
    else:
        print(f"action={resp['action']}\nrule={resp['rule']}")
    return 0


def check_policy_files(cfg: Any) -> list[str]:
    """check-config: every bad line of the policy's list and profile files ("FILE: line N:
    ..."); a missing file is only noted on stderr (the daemon then uses an empty list)."""
    from logwatch.daemon.policyside import read_text
    from logwatch.engine.policy.quotas import parse_profiles
    from logwatch.engine.policy.s25r import parse_regex_list
    from logwatch.engine.policy.saslblock import parse_block_list

    p = cfg.policy
    files = [(p.sasl_block_list, parse_block_list), (p.s25r_whitelist, parse_regex_list),
             (p.s25r_blacklist, parse_regex_list)]
    files += [(q.profiles, parse_profiles) for q in cfg.quotas if q.profiles]
    problems = []
    for path, parse in files:
        if not path:
            continue
        try:
            text = read_text(path)
        except OSError as exc:
            print(f"{path}: cannot read ({exc.strerror or exc}); the policy service starts "
                  "with it empty", file=sys.stderr)
            continue
        problems += [f"{path}: {w}" for w in parse(text)[1]]
    return problems
