"""/metrics: a prometheus_client Collector that reads the daemon's state at scrape time.

Nothing is counted twice: the daemon keeps its counters (status.py, the parser's, the
engine's) and this module only turns one status snapshot into metric families. Labels are
low-cardinality by construction: source paths, event kinds, rule ids, ban reasons (event
kinds), effector and tool names; never an IP or a user."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from logwatch.daemon.status import LATENCY_BUCKETS
from logwatch.web import METRICS, MetricProvider, Query

P = "logwatchd_"
LATENCY_NAMES = {"firewall": "firewall_write_seconds", "relaymap": "map_write_seconds"}


def counter(name: str, doc: str, labels: list[str], items: Iterable[tuple[Any, float]]
             ) -> CounterMetricFamily:
    fam = CounterMetricFamily(P + name, doc, labels=labels)
    for key, value in items:
        fam.add_metric([str(k) for k in key] if labels else [], value)
    return fam


def _sources(st: dict[str, Any]) -> Iterator[Any]:
    files = st.get("files", [])
    yield counter("lines_read", "Lines read, per source.", ["source"],
                   (((f["path"],), f.get("lines", 0)) for f in files))
    yield counter("lines_skipped", "Lines skipped as too long, per source.", ["source"],
                   (((f["path"],), f.get("skipped_long", 0)) for f in files))
    yield counter("lines_unparsed", "Lines the parser skipped, by reason.", ["reason"],
                   [(("framing",), st.get("lines_unparsed", 0)),
                    (("too-long",), st.get("lines_too_long", 0))])
    lag = GaugeMetricFamily(P + "source_lag_seconds",
                            "Seconds since the followed files were last all read.")
    lag.add_metric([], st["lag"] if st.get("lag") is not None else float("nan"))
    yield lag
    yield GaugeMetricFamily(P + "source_lag_bytes", "Bytes not yet read of the followed files.",
                            value=st.get("lag_bytes") or 0)


def _events(st: dict[str, Any]) -> Iterator[Any]:
    yield counter("events", "Events by kind.", ["kind"],
                   (((k,), v) for k, v in sorted(st.get("events", {}).items())))
    yield counter("rule_matches", "Events by the rule that matched.", ["rule"],
                   (((k,), v) for k, v in sorted(st.get("rules", {}).items())))
    yield counter("rule_selftest_failures", "Rule self-test failures of rejected reloads.",
                   [], [((), st.get("selftest_failures", 0))])


def _state(query: Query, st: dict[str, Any], backend: str) -> Iterator[Any]:
    # "active_": a gauge may not share its name with the counter logwatchd_bans_total.
    yield GaugeMetricFamily(P + "active_grants", "Live relay grants.",
                            value=st.get("grants", 0))
    bans = GaugeMetricFamily(P + "active_bans", "Live bans, by reason and firewall backend.",
                             labels=["reason", "backend"])
    for reason, n in sorted(st.get("bans_by_reason", {}).items()):
        bans.add_metric([reason, backend], n)
    yield bans
    actions = st.get("actions", {})
    for name, action, doc in (("bans", "ban", "Bans made."), ("unbans", "unban", "Bans lifted."),
                              ("grants", "grant", "Relay grants made.")):
        yield counter(f"{name}", doc, [], [((), actions.get(action, 0))])


def _histograms(st: dict[str, Any]) -> Iterator[Any]:
    for effector, name in LATENCY_NAMES.items():
        h = st.get("latency", {}).get(effector, {"counts": [0] * (len(LATENCY_BUCKETS) + 1),
                                                 "sum": 0.0})
        buckets, running = [], 0
        for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], h["counts"], strict=True):
            running += n
            buckets.append((bound, running))
        fam = HistogramMetricFamily(P + name, f"Time of one {effector} write (a batch).")
        fam.add_metric([], buckets, h["sum"])
        yield fam


def _process(st: dict[str, Any]) -> Iterator[Any]:
    yield counter("command_failures", "External commands that failed, by tool.", ["command"],
                   (((k,), v) for k, v in sorted(st.get("command_failures", {}).items())))
    yield GaugeMetricFamily(P + "start_time_seconds", "When the daemon started (Unix time).",
                            value=st.get("started", 0))
    yield counter("reloads", "Successful reloads.", [], [((), st.get("reloads", 0))])
    yield counter("errors", "Errors (effector, store, source, reload; the last 20 are on the "
                   "status page).", [], [((), st.get("errors_total", 0))])


class DaemonCollector:
    """Collector (prometheus_client) over one status snapshot per scrape and every
    registered METRICS provider."""

    def __init__(self, query: Query) -> None:
        self.query = query

    def collect(self) -> Iterator[Any]:
        status = self.query({"cmd": "status"})
        for provider in METRICS:
            yield from provider.collect(self.query, status)


class Metrics:
    """The /metrics body: a registry holding only our collector (no process collector: the
    scrape reads no /proc)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, query: Query) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(query))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _core(query: Query, st: dict[str, Any]) -> Iterator[Any]:
    """The built-in provider: sources, events, grants and bans, write latency, the process."""
    yield from _sources(st)
    yield from _events(st)
    yield from _state(query, st, st.get("firewall_backend", "none"))
    yield from _histograms(st)
    yield from _process(st)


METRICS.register("core", MetricProvider("core", _core))
