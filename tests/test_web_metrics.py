"""/metrics as Prometheus reads it: the exposition parsed with prometheus_client's own text
parser (never grepped), from a status snapshot and the real command table; providers plug in."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from logwatch.daemon.status import LATENCY_BUCKETS, Counters
from logwatch.engine.model import Ban
from logwatch.services.commands import Actions, Commands
from logwatch.web import METRICS, MetricProvider
from logwatch.web import parts as _parts  # noqa: F401  (risk, accounting, policy providers)
from logwatch.web.metrics import Metrics


class Engine:
    def __init__(self) -> None:
        self.bans = {"10.0.0.1/32": Ban("10.0.0.1/32", 1.0, None, 5, {"user-unknown": 5}),
                     "10.0.0.2/32": Ban("10.0.0.2/32", 1.0, None, 0, {}, source="manual"),
                     "10.0.0.3/32": Ban("10.0.0.3/32", 1.0, None, 5, {"user-unknown": 5})}
        self.grants: dict[str, Any] = {}


def snapshot() -> dict[str, Any]:
    c = Counters(started=100.0)
    c.observe("firewall", 0.0005)
    c.observe("firewall", 0.03)
    c.observe("firewall", 60.0)
    return {"files": [{"path": "/var/log/mail.log", "lines": 10, "skipped_long": 1}],
            "lines_unparsed": 2, "lines_too_long": 0, "lag": None, "lag_bytes": 0,
            "events": {"login": 3, "user-unknown": 7}, "rules": {"dovecot-login": 3},
            "selftest_failures": 1, "grants": 2, "actions": {"ban": 4, "unban": 1},
            "latency": {k: {"counts": v.counts, "sum": v.total} for k, v in c.latency.items()},
            "command_failures": {"iptables-restore": 2}, "started": 100.0, "reloads": 0,
            "errors": [], "errors_total": 3, "firewall_backend": "ipset",
            "bans_by_reason": {"user-unknown": 2, "manual": 1}}


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}


def render() -> dict[str, Any]:
    commands = Commands(Engine(), Actions(status=snapshot, apply=lambda e: None,
                                          reload=lambda: (True, "")))
    return families(Metrics(commands).render().decode())


def test_the_exposition_parses_and_holds_the_documented_metrics() -> None:
    fams = render()
    lines = samples(fams["logwatchd_lines_read"])
    assert lines[("logwatchd_lines_read_total", (("source", "/var/log/mail.log"),))] == 10
    events = samples(fams["logwatchd_events"])
    assert events[("logwatchd_events_total", (("kind", "user-unknown"),))] == 7
    bans = samples(fams["logwatchd_active_bans"])
    assert bans == {
        ("logwatchd_active_bans", (("backend", "ipset"), ("reason", "user-unknown"))): 2,
        ("logwatchd_active_bans", (("backend", "ipset"), ("reason", "manual"))): 1}
    assert fams["logwatchd_bans"].type == "counter"
    assert samples(fams["logwatchd_bans"]) == {("logwatchd_bans_total", ()): 4}
    assert samples(fams["logwatchd_unbans"])[("logwatchd_unbans_total", ())] == 1
    assert samples(fams["logwatchd_rule_selftest_failures"])[
        ("logwatchd_rule_selftest_failures_total", ())] == 1
    failures = samples(fams["logwatchd_command_failures"])
    assert failures[("logwatchd_command_failures_total", (("command", "iptables-restore"),))] == 2
    assert samples(fams["logwatchd_source_lag_seconds"])  # NaN while nothing was read
    assert samples(fams["logwatchd_errors"]) == {("logwatchd_errors_total", ()): 3}
    for name in ("logwatchd_active_grants", "logwatchd_grants", "logwatchd_rule_matches", "logwatchd_map_write_seconds",
                 "logwatchd_lines_skipped", "logwatchd_start_time_seconds"):
        assert name in fams, name


def test_latency_is_a_cumulative_histogram_with_seconds_in_its_name() -> None:
    fam = render()["logwatchd_firewall_write_seconds"]
    assert fam.type == "histogram"
    got = samples(fam)
    buckets = [got[("logwatchd_firewall_write_seconds_bucket", (("le", le),))]
               for le in [*map(str, LATENCY_BUCKETS), "+Inf"]]
    assert buckets[0] == 1 and buckets[LATENCY_BUCKETS.index(0.05)] == 2 and buckets[-1] == 3
    assert buckets == sorted(buckets)
    assert got[("logwatchd_firewall_write_seconds_count", ())] == 3
    assert got[("logwatchd_firewall_write_seconds_sum", ())] == pytest.approx(60.0305)
    empty = samples(render()["logwatchd_map_write_seconds"])
    assert empty[("logwatchd_map_write_seconds_count", ())] == 0


def test_no_label_holds_an_ip_or_a_user() -> None:
    for fam in render().values():
        for s in fam.samples:
            for value in s.labels.values():
                assert "10.0.0." not in value


def test_the_merged_parts_export_theirs_when_on() -> None:
    fams = render()
    assert "logwatchd_suspended_accounts" not in fams     # account risk off
    on = {"risk": {"suspensions": 2}, "accounting": {"open": 4, "delivered": 9},
          "policy": {"verdicts": {"banned": 3, "dunno": 10, "refunds": 1}}}
    commands = Commands(Engine(), Actions(status=lambda: {**snapshot(), **on},
                                          apply=lambda e: None, reload=lambda: (True, "")))
    fams = families(Metrics(commands).render().decode())
    assert samples(fams["logwatchd_suspended_accounts"]) == {
        ("logwatchd_suspended_accounts", ()): 2}
    records = samples(fams["logwatchd_accounting_records"])
    assert records[("logwatchd_accounting_records_total", (("outcome", "delivered"),))] == 9
    rules = samples(fams["logwatchd_policy_rule_verdicts"])
    assert rules == {("logwatchd_policy_rule_verdicts_total", (("rule", "banned"),)): 3,
                     ("logwatchd_policy_rule_verdicts_total", (("rule", "dunno"),)): 10}


def test_a_provider_adds_its_families(monkeypatch: pytest.MonkeyPatch) -> None:
    def policy(query: Any, status: dict[str, Any]) -> Any:
        fam = GaugeMetricFamily("logwatchd_extra", "A part's own gauge.")
        fam.add_metric([], status["grants"] + 1)
        yield fam

    monkeypatch.setitem(METRICS._entries, "extra", MetricProvider("extra", policy))
    assert samples(render()["logwatchd_extra"]) == {("logwatchd_extra", ()): 3}
