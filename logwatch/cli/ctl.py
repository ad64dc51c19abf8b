"""logwatchctl: talk to the running logwatchd over its control socket, check configs, test rules."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from logwatch import __version__
from logwatch.clock import Clock, wall
from logwatch.daemon.config import DEFAULT_CONFIG_PATH, ConfigError, DaemonConfig, load_config
from logwatch.services.control import Unavailable, request
from logwatch.util.duration import duration_arg

EXIT_OK = 0
EXIT_FAILED = 1          # the daemon refused the command, or the config is invalid
EXIT_USAGE = 2           # argparse's own code for bad usage
EXIT_NOT_RUNNING = 3     # socket missing or nobody listening
EXIT_PERMISSION = 4      # socket exists but we may not connect (not root)


def _ts(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def format_status(st: dict[str, Any]) -> str:
    """Human-readable status report."""
    out = [
        f"logwatchd {st.get('version', '?')}  pid {st.get('pid', '?')}  "
        f"up {_duration(st.get('uptime'))}{'  (DRY RUN)' if st.get('dry_run') else ''}",
        f"config:        {st.get('config') or '(built-in defaults)'}",
        f"lines read:    {st.get('lines_read', 0)}   skipped: {st.get('lines_skipped', 0)}"
        f"   not understood: {st.get('lines_unparsed', 0)}",
        f"rule matcher:  {st.get('matcher', '?')}",
        f"grants:        {st.get('grants', 0)}",
        f"bans:          {st.get('bans', 0)}",
    ]
    out += _store_lines(st)
    lag, unread = st.get("lag"), st.get("lag_bytes")
    out.append("lag:           " + (
        "n/a (no log files followed)" if lag is None
        else "0 (at the end of every log file)" if not unread
        else f"{lag:.1f}s behind the log ({unread} bytes unread)"))
    risk = st.get("risk")
    if risk:
        out.append(f"accounts:      {risk.get('accounts', 0)} SASL IDs followed, "
                   f"{risk.get('suspensions', 0)} suspended "
                   f"({risk.get('suspended', 0)} suspensions since start)")
    if st.get("watchdog_kills") is not None:
        out.append(f"watchdog:      {st['watchdog_kills']} stuck sessions killed")
    events = st.get("events") or {}
    out.append("events:        " + (", ".join(f"{k}={v}" for k, v in sorted(events.items()))
                                    or "none"))
    guards = {"too long": st.get("lines_too_long"), "rules over budget":
              st.get("rules_over_budget"), "rules quarantined": st.get("rules_quarantined")}
    guards.update((f"log time {k}", v) for k, v in (st.get("log_time") or {}).items())
    if any(guards.values()):
        out.append("guards:        " + ", ".join(f"{k}={v}" for k, v in guards.items() if v))
    policy = st.get("policy")
    if policy:
        out.append("policy:        " + ", ".join(
            f"{k}={policy.get(k, 0)}" for k in ("requests", "malformed", "errors", "too_long",
                                                "clients", "quota_keys", "sasl_blocked"))
            + "  verdicts: " + (", ".join(f"{k}={v}" for k, v in
                                          sorted(policy.get("verdicts", {}).items())) or "none"))
    actions = st.get("actions") or {}
    if actions:
        out.append("actions:       " + ", ".join(f"{k}={v}" for k, v in sorted(actions.items())))
    files = st.get("files") or []
    if files:
        out.append("files:")
        for f in files:
            out.append(f"  {f.get('path')}  offset {f.get('offset')}"
                       + (f" of {f['size']}" if f.get("size") is not None else "")
                       + (f"  inode {f['inode']}" if f.get("inode") else "")
                       + ("  MISSING (waiting for it to appear)" if f.get("missing") else ""))
    errors = st.get("errors") or []
    if errors:
        out.append("last errors:")
        for e in errors[-10:]:
            out.append(f"  {_ts(e.get('time'))}  {e.get('message')}")
    return "\n".join(out)


def _store_lines(st: dict[str, Any]) -> list[str]:
    """The store, and with a shared one this node's name and the peers seen recently."""
    lines = [f"store:         {st['store']}"] if st.get("store") else []
    fleet = st.get("fleet")
    if fleet:
        peers = ", ".join(f"{p.get('node')} ({p.get('seen')}s ago)" if "node" in p
                          else f"? ({p.get('error')})" for p in fleet.get("peers", []))
        lines.append(f"node:          {fleet.get('node')}"
                     + ("" if fleet.get("listening") else "  (not listening: store away)"))
        lines.append(f"peers:         {peers or 'none seen in the last minute'}")
    return lines


def format_bans(bans: list[dict[str, Any]], clock: Clock = wall) -> str:
    now = clock()
    rows = [[b["ip"], b.get("reason") or "-", _ts(b.get("since")),
             _ts(b.get("expires")) if b.get("expires") is None
             else f"{_ts(b['expires'])} (in {_duration(b['expires'] - now)})"]
            for b in bans]
    return _table(*_with_node(rows, bans, ["IP", "REASON", "SINCE", "EXPIRES"])) \
        + f"\n{len(bans)} ban(s)"


def _with_node(rows: list[list[str]], items: list[dict[str, Any]],
               header: list[str]) -> tuple[list[list[str]], list[str]]:
    """A NODE column (the deciding node) when the daemon shares its store with others."""
    if not any("node" in item for item in items):
        return rows, header
    return ([[*row, item.get("node") or "-"] for row, item in zip(rows, items, strict=True)],
            [*header, "NODE"])


def format_grants(grants: list[dict[str, Any]], clock: Clock = wall) -> str:
    now = clock()
    rows = [[g["ip"], g.get("reason") or "-", _ts(g.get("since")),
             f"{_ts(g['expires'])} (in {_duration(g['expires'] - now)})"]
            for g in grants]
    return _table(*_with_node(rows, grants, ["IP", "REASON", "SINCE", "EXPIRES"])) \
        + f"\n{len(grants)} grant(s)"


def format_offenders(offenders: list[dict[str, Any]], total: int, clock: Clock = wall) -> str:
    now = clock()
    rows = []
    for o in offenders:
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(o.get("reasons", {}).items())) or "-"
        if o.get("distinct_threshold"):
            reasons += f" users:{o['distinct_users']}/{o['distinct_threshold']}"
        decays = ("-" if o.get("decays_at") is None
                  else f"in {_duration(o['decays_at'] - now)}, 0 in {_duration(o['clears_at'] - now)}")
        rows.append([o["ip"], f"{o['score']:g}/{o['threshold']:g}"
                     + (" (protected)" if o.get("protected") else ""), reasons, decays])
    more = f" (the {len(offenders)} highest shown)" if total > len(offenders) else ""
    return (_table(rows, ["IP", "SCORE", "REASONS", "SCORE DROPS"])
            + f"\n{total} offender(s) not banned{more}")


def format_accounts(resp: dict[str, Any], clock: Clock = wall) -> str:
    """Top senders with their counts, score and why; then the suspended IDs with expiry."""
    now = clock()
    threshold = resp.get("threshold", 0)
    rows = [[a["user"], f"{a['score']:g}/{threshold:g}"
             + (" (never suspended)" if a.get("never_suspend") else ""),
             str(a["messages"]), str(a["recipients"]), str(a["ips"]), str(a["networks"]),
             ",".join(f"{k}:{v:g}" for k, v in sorted(a.get("why", {}).items())) or "-"]
            for a in resp.get("accounts", [])]
    total = resp.get("total", len(rows))
    out = [_table(rows, ["SASL ID", "SCORE", "MSGS", "RCPTS", "IPS", "NETS", "WHY"]),
           f"{total} account(s) active in the last {_duration(resp.get('window'))}"
           + (f" (the {len(rows)} highest shown)" if total > len(rows) else "")]
    sus = resp.get("suspended", [])
    if sus:
        srows = [[s["user"], _ts(s["since"]),
                  f"{_ts(s['expires'])} (in {_duration(s['expires'] - now)})",
                  f"{s['score']:g}", str(s["offences"]),
                  ",".join(f"{k}:{v:g}" for k, v in sorted(s.get("why", {}).items()))
                  or s.get("source", "-")]
                 for s in sus]
        out += ["", _table(srows, ["SUSPENDED", "SINCE", "EXPIRES", "SCORE", "TIMES", "WHY"])]
    out.append(f"{len(sus)} suspended")
    return "\n".join(out)


def format_messages(messages: list[dict[str, Any]]) -> str:
    """`logwatchctl messages`: one row per message, the newest first."""
    rows = []
    # A shared store (store.url postgresql://): the node that accounted each message.
    fleet = any(m.get("node") for m in messages)
    for m in messages:
        rcpts = m.get("recipients") or []
        first = rcpts[0]["address"] if rcpts else "-"
        more = f" (+{len(rcpts) - 1})" if len(rcpts) > 1 else ""
        rows.append([_ts(m.get("done_time")), m.get("queue_id", "?"), m.get("client_ip") or "-",
                     m.get("sasl_user") or "-", m.get("sender") or "<>", first + more,
                     str(m.get("size", 0)), m.get("outcome", "?")]
                    + ([str(m.get("node") or "-")] if fleet else []))
    # Addresses are the clients' text: controls escaped, so no terminal escape gets through.
    from logwatch.daemon.statslog import escape

    rows = [[escape(c) for c in r] for r in rows]
    return (_table(rows, ["DONE", "QUEUE ID", "CLIENT", "AUTH ID", "SENDER", "RECIPIENTS",
                          "SIZE", "OUTCOME"] + (["NODE"] if fleet else []))
            + f"\n{len(messages)} message(s)")


def _where(p: dict[str, Any]) -> str:
    if p.get("file") and p.get("line"):
        return f"{p['entry']} ({p['file']}:{p['line']})"
    return f"{p['entry']} ({p['what']})"


def format_check(v: dict[str, Any], clock: Clock = wall) -> str:
    """What the daemon would do with one address, one fact a line."""
    now = clock()
    out = [f"{v['ip']}  (counted as offender network {v['offender_net']})"]
    prot = v.get("protected_by") or []
    out.append("whitelisted:   " + ("yes" if v.get("whitelisted") else "no"))
    out.append("never banned:  " + ("yes, by " + "; ".join(
        f"{p['what']} {_where(p)}" if p.get("file") else _where(p) for p in prot)
        if v.get("protected") else "no"))
    g = v.get("grant")
    if g:
        out.append(f"granted:       yes, {g.get('service') or '?'} login {g.get('user') or '?'}, "
                   f"expires {_ts(g['expires'])} (in {_duration(g['expires'] - now)})")
    elif v.get("never_granted_by"):
        out.append("granted:       no, never: " + "; ".join(
            f"{p['what']} {p['entry']}" for p in v["never_granted_by"]))
    else:
        out.append("granted:       no")
    b = v.get("ban")
    if b:
        until = ("permanently" if b.get("expires") is None
                 else f"until {_ts(b['expires'])} (in {_duration(b['expires'] - now)})")
        reason = ",".join(f"{k}:{n}" for k, n in sorted((b.get("reason") or {}).items()))
        out.append(f"banned:        yes, {b['ip']} {until}, {reason or b.get('source')}")
    else:
        out.append("banned:        no")
    o = v.get("offender")
    if o:
        reasons = ",".join(f"{k}:{n}" for k, n in sorted(o["reasons"].items())) or "-"
        line = f"score:         {o['score']:g} of {o['threshold']:g} ({reasons})"
        if o.get("decays_at") is not None:
            line += f", drops in {_duration(o['decays_at'] - now)}"
        out.append(line)
    else:
        out.append("score:         0")
    return "\n".join(out)


def _ip_and_duration(s: argparse.ArgumentParser, what: str) -> None:
    """IP [DURATION] or IP --for DURATION (90, 30s, 10m, 1h, 7d)."""
    s.add_argument("ip")
    s.add_argument("duration", nargs="?", type=duration_arg, metavar="DURATION", help=what)
    s.add_argument("--for", dest="duration_flag", type=duration_arg, metavar="DURATION",
                   help="the same as DURATION")


def _account_commands(sub: Any) -> None:
    """accounts, suspend and unsuspend (account risk, engine/accounts.py)."""
    s = sub.add_parser("accounts", help="SASL IDs: top senders with counts, score and why; "
                                        "suspended IDs with expiry")
    s.add_argument("--limit", type=int, default=20, metavar="N",
                   help="show the N highest scores (default 20; 0: all)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("suspend", help="suspend a SASL ID now (check_sasl_access table)")
    s.add_argument("user")
    s.add_argument("--for", dest="duration_flag", type=duration_arg, metavar="DURATION",
                   help="how long (default: accounting.suspend_time)")
    s = sub.add_parser("unsuspend", help="lift the suspension of a SASL ID")
    s.add_argument("user")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logwatchctl",
        description="Control a running logwatchd, check its configuration, test log rules.",
        epilog=f"Exit codes: 0 ok, 1 command failed or config invalid, 2 usage, "
               f"{EXIT_NOT_RUNNING} daemon not running, {EXIT_PERMISSION} socket not accessible.",
    )
    p.add_argument("--version", action="version", version=f"logwatchctl {__version__}")
    p.add_argument("--socket", default=None, metavar="PATH",
                   help=f"control socket (default: daemon.socket of --config, else "
                        f"{DaemonConfig().socket})")
    p.add_argument("--config", default=None, metavar="FILE",
                   help=f"daemon config file to read the socket path from "
                        f"(default {DEFAULT_CONFIG_PATH}, if present)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("status", help="daemon state: counters, files, lag, errors")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("bans", help="list live bans")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("grants", help="list live relay grants")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("ban", help="ban an IP or CIDR now")
    _ip_and_duration(s, "ban duration (default: bans.bantime)")
    s = sub.add_parser("unban", help="lift a ban")
    s.add_argument("ip")
    s = sub.add_parser("grant", help="let an IP relay now")
    _ip_and_duration(s, "grant duration (default: relay.grace)")
    s = sub.add_parser("revoke", help="withdraw a relay grant")
    s.add_argument("ip")
    s = sub.add_parser("offenders", help="IPs with a score that are not banned (yet)")
    s.add_argument("--limit", type=int, default=100, metavar="N",
                   help="show the N highest scores (default 100; 0: all)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("check", help="what the daemon thinks of one IP: whitelisted, granted, "
                                     "banned, score, and what protects it")
    s.add_argument("ip")
    s.add_argument("--json", action="store_true")
    _account_commands(sub)
    s = sub.add_parser("messages", help="recent message records (accounting): who sent what")
    s.add_argument("--user", metavar="U", help="only those of this SASL user")
    s.add_argument("--ip", metavar="IP", help="only those from this client address")
    s.add_argument("--since", type=duration_arg, metavar="D",
                   help="only those done in the last D (90, 30m, 2h, 7d)")
    s.add_argument("--limit", type=int, default=100, metavar="N",
                   help="the N newest (default 100)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("verdicts", help="the policy service's stored verdicts (not DUNNO)")
    s.add_argument("--since", type=duration_arg, metavar="DURATION",
                   help="only those of the last DURATION (e.g. 1h, 7d)")
    s.add_argument("--ip", metavar="IP", help="only those about this client address")
    s.add_argument("--user", metavar="ID", help="only those about this SASL user")
    s.add_argument("--limit", type=int, default=1000, metavar="N",
                   help="the newest N (default 1000)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("policy-test", help="read a policy request (name=value lines) on stdin "
                                           "and print the verdict and rule; counts nothing")
    s.add_argument("--json", action="store_true")
    sub.add_parser("reload", help="reload config, rules and whitelist (like SIGHUP)")
    sub.add_parser("flush", help="lift all bans (grants are kept)")
    s = sub.add_parser("check-config", help="validate a config file without starting")
    s.add_argument("file", nargs="?", default=DEFAULT_CONFIG_PATH)

    s = sub.add_parser("parse", help="print the events the rules find in log files")
    t = sub.add_parser("test-rules", help="report how the rules match a log file")
    try:
        from logwatch.cli import ruletest
    except ImportError:
        s.add_argument("rest", nargs=argparse.REMAINDER)
        t.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        ruletest.add_parse_args(s)
        ruletest.add_test_rules_args(t)
    return p


def _socket_path(args: argparse.Namespace) -> str:
    """--socket, else daemon.socket of the config file (the default one may be absent)."""
    if args.socket:
        return args.socket
    config = getattr(args, "config", None)
    return load_config(config or DEFAULT_CONFIG_PATH, missing_ok=config is None).daemon.socket


def _call(args: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any]:
    return request(_socket_path(args), req)


def _check_config(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        return EXIT_FAILED
    problems = []
    try:
        from logwatch.parsing.rules import load_ruleset
    except ImportError:
        pass
    else:
        from logwatch.daemon.app import effective_rules_dirs

        try:
            load_ruleset(effective_rules_dirs(cfg), cfg.rules.local_dir)
        except Exception as exc:
            problems.append(f"rules: {exc}")
    problems.extend(_check_whitelist(cfg.bans.whitelist))
    from logwatch.cli.policyctl import check_policy_files

    problems.extend(check_policy_files(cfg))
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return EXIT_FAILED
    print(f"{path}: OK")
    return EXIT_OK


def _check_whitelist(path: str | None) -> list[str]:
    """Every bad or doubtful whitelist line, as "FILE:LINE: ..."; a missing file is only noted."""
    if not path:
        return []
    if not os.path.exists(path):
        print(f"{path}: not found; the whitelist holds loopback only", file=sys.stderr)
        return []
    from logwatch.engine.whitelist import Whitelist

    _wl, warnings = Whitelist.from_file(path)
    return [f"whitelist: {w}" for w in warnings]


def run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "check-config":
        return _check_config(args.file)
    if cmd in ("parse", "test-rules"):
        from logwatch.cli import ruletest

        return int((ruletest.cmd_parse if cmd == "parse" else ruletest.cmd_test_rules)(args) or 0)
    if cmd in ("verdicts", "policy-test"):
        from logwatch.cli.policyctl import run_policy

        return run_policy(args, _call)
    req: dict[str, Any] = {"cmd": cmd}
    if cmd in ("ban", "unban", "grant", "revoke", "check"):
        req["ip"] = args.ip
    if cmd in ("offenders", "accounts"):
        req["limit"] = args.limit if args.limit > 0 else None      # null: all of them
    if cmd in ("suspend", "unsuspend"):
        req["user"] = args.user
    if cmd == "messages":
        req.update(user=args.user, ip=args.ip, since=args.since, limit=args.limit)
    duration, flag = getattr(args, "duration", None), getattr(args, "duration_flag", None)
    if duration is not None and flag is not None:
        print(f"logwatchctl {cmd}: give the duration once (DURATION or --for)", file=sys.stderr)
        return EXIT_USAGE
    if duration is not None or flag is not None:
        req["for"] = duration if duration is not None else flag
    resp = _call(args, req)
    if not resp.get("ok"):
        print(f"logwatchctl: {resp.get('error', cmd + ' failed')}", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "json", False):
        payload = {k: v for k, v in resp.items() if k != "ok"}
        if cmd in ("bans", "grants", "offenders", "messages"):
            payload = payload[cmd]
        print(json.dumps(payload, indent=2, sort_keys=True))
    elif cmd == "status":
        print(format_status(resp))
    elif cmd == "bans":
        print(format_bans(resp["bans"]))
    elif cmd == "grants":
        print(format_grants(resp["grants"]))
    elif cmd == "offenders":
        print(format_offenders(resp["offenders"], resp.get("total", len(resp["offenders"]))))
    elif cmd == "check":
        print(format_check(resp))
    elif cmd == "accounts":
        print(format_accounts(resp))
    elif cmd == "messages":
        print(format_messages(resp["messages"]))
    else:
        print(resp.get("message", "ok"))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = run(args)
        sys.stdout.flush()      # here, so that a closed pipe is caught below, not at exit
        return code
    except BrokenPipeError:
        # `logwatchctl bans | head`: the reader left, which is no error of ours. Point stdout
        # at /dev/null so that the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except Unavailable as exc:
        print(f"logwatchctl: {exc}", file=sys.stderr)
        return EXIT_PERMISSION if exc.reason == "permission" else EXIT_NOT_RUNNING
    except (OSError, ValueError) as exc:
        print(f"logwatchctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:      # the config file naming the socket is broken
        print(f"logwatchctl: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
