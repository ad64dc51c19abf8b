"""The policy and accounting metrics (logwatchd_policy_verdicts_total{rule,action},
logwatchd_quota_hits_total{quota}, logwatchd_messages_total{direction}): from a status
snapshot, and from a real daemon answering policy requests and reading Postfix log lines;
/metrics parsed with prometheus_client's text parser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_policy_daemon import PolicyClient, free_port
from test_web_metrics import Engine, snapshot
from webdaemon import WebDaemon, stamp

import logwatch.web.parts  # noqa: F401  (registers the policy and accounting providers)
from logwatch.services.commands import Actions, Commands
from logwatch.web.metrics import Metrics


def samples(text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            assert fam.type == "counter"
            return {tuple(sorted(s.labels.items())): s.value for s in fam.samples
                    if s.name == f"{family}_total"}
    raise AssertionError(f"{family} not in /metrics")


def test_the_families_from_a_status_snapshot() -> None:
    on = {"accounting": {"open": 0, "messages": {"sent": 4, "received": 9}},
          "policy": {"verdicts": {"none": 5, "quota:user-rcpt": 2},
                     "verdict_actions": {"none": {"DUNNO": 5},
                                         "quota:user-rcpt": {"DEFER_IF_PERMIT": 2}},
                     "quota_hits": {"user-rcpt": 2}}}
    commands = Commands(Engine(), Actions(status=lambda: {**snapshot(), **on},
                                          apply=lambda e: None, reload=lambda: (True, "")))
    text = Metrics(commands).render().decode()
    assert samples(text, "logwatchd_policy_verdicts") == {
        (("action", "DUNNO"), ("rule", "none")): 5,
        (("action", "DEFER_IF_PERMIT"), ("rule", "quota:user-rcpt")): 2}
    assert samples(text, "logwatchd_quota_hits") == {(("quota", "user-rcpt"),): 2}
    assert samples(text, "logwatchd_messages") == {(("direction", "sent"),): 4,
                                                   (("direction", "received"),): 9}


def message(qid: str, user: str) -> list[str]:
    """One Postfix message that left the queue; submitted by `user` unless it is empty."""
    p = f"{stamp()} mx postfix"
    sasl = f", sasl_method=PLAIN, sasl_username={user}" if user else ""
    return [f"{p}/smtpd[1]: {qid}: client=laptop.example.org[192.0.2.10]{sasl}",
            f"{p}/cleanup[2]: {qid}: message-id=<{qid}@laptop.example.org>",
            f"{p}/qmgr[3]: {qid}: from=<a@example.org>, size=1234, nrcpt=1 (queue active)",
            f"{p}/smtp[4]: {qid}: to=<b@example.com>, relay=mx.example.com[203.0.113.5]:25, "
            "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
            f"{p}/qmgr[3]: {qid}: removed"]


def metrics_text(w: WebDaemon) -> str:
    status, _, body = w.get("/metrics")
    assert status == 200
    return body.decode()


@pytest.mark.needs("postmap")
def test_a_real_daemon_counts_verdicts_quota_hits_and_messages(tmp_path: Path) -> None:
    port = free_port()
    quota = {"name": "user-rcpt", "key": "sasl_username", "count": "recipients", "limit": 2,
             "period": "1m", "action": "defer"}
    w = WebDaemon(tmp_path, accounting=True, settings={
        "policy": {"listen": f"inet:127.0.0.1:{port}"}})
    w.proc.settings["quotas"] = [quota]      # a list: not a section the harness merges
    w.proc.write_config()
    w.start(prefill=False)
    client = None
    try:
        text = metrics_text(w)
        assert samples(text, "logwatchd_messages") == {(("direction", "sent"),): 0,
                                                       (("direction", "received"),): 0}
        assert samples(text, "logwatchd_policy_verdicts") == {}
        client = PolicyClient(f"inet:127.0.0.1:{port}")
        answers = [client.ask(client_address="192.0.2.5", sasl_username="carol", instance="A",
                              recipient=f"r{i}@example.org") for i in range(4)]
        assert [a.split(" ")[0] for a in answers] == ["action=DUNNO"] * 2 + [
            "action=DEFER_IF_PERMIT"] * 2
        for line in message("A1B2C3D4E5", "alice") + message("B1B2C3D4E5", "") \
                + message("C1B2C3D4E5", ""):
            w.proc.append(line)
        deadline = time.monotonic() + 10
        while True:
            text = metrics_text(w)
            messages = samples(text, "logwatchd_messages")
            if messages[(("direction", "received"),)] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert messages == {(("direction", "sent"),): 1, (("direction", "received"),): 2}
        verdicts = samples(text, "logwatchd_policy_verdicts")
        assert verdicts[(("action", "DUNNO"), ("rule", "none"))] == 2
        assert verdicts[(("action", "DEFER_IF_PERMIT"), ("rule", "quota:user-rcpt"))] == 2
        assert samples(text, "logwatchd_quota_hits") == {(("quota", "user-rcpt"),): 2}
        for fam in text_string_to_metric_families(text):     # low cardinality: no IP, no user
            for s in fam.samples:
                assert not {"192.0.2.5", "carol", "alice"} & set(s.labels.values()), s
    finally:
        if client is not None:
            client.close()
        w.stop()
