"""S25R (Selective SMTP Rejection, smtp_wrapper's rules): clients whose reverse name looks like
an end-user (dynamic) address, or that have no reverse name at all, are deferred or scored.

The six patterns are the published S25R rules (Tetsuo Asami, "Selective SMTP Rejection (S25R)
anti-spam system", http://www.gabacho-net.jp/en/anti-spam/anti-spam-system.html , the
"Rules" section); they are applied to the lower-cased reverse_client_name and client_name.
Never applied to SASL-authenticated, granted (pop-before-smtp), mynetworks or whitelisted
clients. Names are only matched when they could be DNS names (at most 253 characters, labels
of at most 63): Python's re backtracks, and every pattern is then bounded by that length.
"""

from __future__ import annotations

import re
from typing import Any

from logwatch.engine.policy.request import PolicyRequest

S25R_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((f"s25r-rule{i}", re.compile(p)) for i, p in enumerate((
    r"^[^.]*[0-9][^0-9.]+[0-9].*\.",                  # two digit runs split by non-digits
    r"^[^.]*[0-9]{5}",                                # five digits in a row in the first label
    r"^([^.]+\.)?[0-9][^.]*\.[^.]+\..+\.[a-z]",       # 1st or 2nd label starts with a digit
    r"^[^.]*[0-9]\.[^.]*[0-9]-[0-9]",                 # digit-ended label, then N-N
    r"^[^.]*[0-9]\.[^.]*[0-9]\.[^.]+\..+\.",          # five+ labels, two lowest end in digits
    r"^(dhcp|dialup|ppp|[achrsvx]?dsl)[^.]*[0-9]",    # dhcp/dialup/ppp/xDSL names with digits
)))
MAX_NAME = 253
_NAME_OK = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?")

ACTIONS = {"defer": "DEFER_IF_PERMIT 4.7.1 Service unavailable; client host looks dynamic "
                    "(S25R), try again later",
           "reject": "REJECT 5.7.1 Client host looks dynamic (S25R)"}
MODES = ("off", "score", "defer", "reject")


def parse_regex_list(text: str) -> tuple[list[re.Pattern[str]], list[str]]:
    """(compiled regexes, warnings) of a white/black list file: one regex a line, # comments."""
    out, warnings = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(re.compile(line, re.IGNORECASE))
        except re.error as exc:
            warnings.append(f"line {number}: {line[:80]!r}: {exc}")
    return out, warnings


def name_rule(name: str) -> str | None:
    """The id of the first S25R pattern a (reverse) client name matches, or None."""
    name = name.lower()
    if len(name) > MAX_NAME or not _NAME_OK.fullmatch(name):
        return None
    for rule, pattern in S25R_RULES:
        if pattern.search(name):
            return rule
    return None


class S25RCheck:
    """`mode` defer/reject answers a Verdict; score notes an offence and lets the next decide."""

    def __init__(self, mode: str, context: Any, whitelist: list[re.Pattern[str]],
                 blacklist: list[re.Pattern[str]]) -> None:
        self.mode = mode
        self.context = context
        self.whitelist = whitelist
        self.blacklist = blacklist
        # Instances already scored: one offence a session, however many requests it makes.
        self._scored: dict[str, None] = {}

    def _exempt(self, req: PolicyRequest, ip: str | None) -> bool:
        if req.sasl_username:
            return True
        engine = self.context.engine
        if ip is not None and engine is not None and engine.policy_exempt(ip):
            return True
        return any(_matches(p, req, ip) for p in self.whitelist)

    def rule(self, req: PolicyRequest) -> str | None:
        """Which S25R rule this request's client falls under, or None."""
        ip = req.client_address
        if self._exempt(req, ip):
            return None
        if any(_matches(p, req, ip) for p in self.blacklist):
            return "s25r-blacklist"
        reverse = req.reverse_client_name or req.client_name
        if not reverse or reverse == "unknown":
            return "s25r-unknown"
        for name in dict.fromkeys((reverse, req.client_name)):
            if name and name != "unknown":
                found = name_rule(name)
                if found is not None:
                    return found
        return None

    def decide(self, req: PolicyRequest, now: float, commit: bool) -> Any:
        from logwatch.engine.policy import Note, Verdict

        rule = self.rule(req)
        if rule is None:
            return None
        if self.mode != "score":
            return Verdict(rule, ACTIONS[self.mode])
        ip = req.client_address
        key = req.instance or f"{ip}"
        if commit and ip is not None and key not in self._scored:
            if len(self._scored) >= 100_000:
                self._scored.clear()
            self._scored[key] = None
            self.context.notes.append(Note("s25r", ip, rule))
        return None


def _matches(pattern: re.Pattern[str], req: PolicyRequest, ip: str | None) -> bool:
    for text in (ip, req.reverse_client_name, req.client_name):
        if text and len(text) <= MAX_NAME and pattern.search(text):
            return True
    return False


def build(policy: Any, quotas: Any, context: Any) -> S25RCheck | None:
    if policy.s25r == "off":
        return None
    white = _lists(context, policy.s25r_whitelist)
    black = _lists(context, policy.s25r_blacklist)
    mode = "defer" if policy.s25r == "on" else policy.s25r
    return S25RCheck(mode, context, white, black)


def _lists(context: Any, path: str | None) -> list[re.Pattern[str]]:
    if not path or context.read_text is None:
        return []
    text = context.read_text(path)
    return parse_regex_list(text)[0]
