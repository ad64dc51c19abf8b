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
