"""The metrics providers and panel bodies of the parts merged after the page: account risk
("risk": suspended SASL IDs), accounting ("accounting": messages sent and received, top SASL
senders) and the policy service ("policy": verdicts). Each reads only what its part already
exposes (the status snapshot, the control commands, the shared counts over time) and says
"not enabled" when the part is off in the running configuration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from logwatch.state.series import SPANS
from logwatch.web import ACTIONS, METRICS, PANELS, MetricProvider, Panel, PanelContext, Query
from logwatch.web.metrics import counter
from logwatch.web.panels import action_form, esc, failed, plot, table, when
from logwatch.web.svg import bar_chart

VERDICT_ROWS = 5000          # audit rows a page reads for the verdicts by action, at most


def _off(what: str, key: str) -> str:
    return f'<p class="disabled">not enabled ({esc(what)} is off: {esc(key)})</p>'


# -- risk --------------------------------------------------------------------------------------

def risk_metrics(query: Query, st: dict[str, Any]) -> Iterator[Any]:
    risk = st.get("risk")
    if risk is not None:
        yield GaugeMetricFamily("logwatchd_suspended_accounts",
                                "SASL IDs suspended by the account risk score.",
                                value=risk.get("suspensions", 0))


def suspended_panel(ctx: PanelContext) -> str:
    if ctx.status.get("risk") is None:
        return _off("account risk", "accounting.enabled")
    answer = ctx.query({"cmd": "accounts", "limit": 1})
    if not answer.get("ok"):
        return failed(answer)
    rows = [[esc(s["user"]), esc(when(s["since"])), esc(when(s["expires"])),
             esc(f"{s['score']:g}"), esc(s["offences"]),
             action_form(ctx, "unsuspend", s["user"], "unsuspend")]
            for s in answer.get("suspended", [])[:50]]
    return (f'<p><span id="suspended-total">{len(answer.get("suspended", []))}</span> suspended '
            f"(threshold {esc(answer.get('threshold'))})</p>"
            + table(["SASL ID", "since", "until", "score", "offences", ""], rows, "suspended"))


# -- accounting --------------------------------------------------------------------------------

def accounting_metrics(query: Query, st: dict[str, Any]) -> Iterator[Any]:
    acct = st.get("accounting")
    if acct is None:
        return
    yield GaugeMetricFamily("logwatchd_accounting_open_messages",
                            "Messages followed in the queue.", value=acct.get("open", 0))
    yield counter("accounting_records", "Message records written, by outcome.", ["outcome"],
                  (((outcome,), acct.get(outcome, 0)) for outcome in
                   ("delivered", "bounced", "partial", "removed", "expired", "incomplete",
                    "rejected")))
    yield counter("messages", "Messages that left the queue, by direction (sent: by a SASL ID; "
                  "received: the others).", ["direction"],
                  (((d,), acct.get("messages", {}).get(d, 0)) for d in ("sent", "received")))


def messages_panel(ctx: PanelContext) -> str:
    if ctx.status.get("accounting") is None:
        return _off("accounting", "accounting.enabled")
    return plot(ctx, {"names": ["sent", "received"]}, "messages sent and received")


def senders_panel(ctx: PanelContext) -> str:
    if ctx.status.get("accounting") is None:
        return _off("accounting", "accounting.enabled")
    answer = ctx.query({"cmd": "series", "span": ctx.span, "top": "sender:", "limit": 10})
    if not answer.get("ok"):
        return failed(answer)
    return bar_chart([(name.removeprefix("sender:"), value) for name, value in answer["top"]],
                     f"top SASL senders, messages in the last {ctx.span}")


# -- policy --------------------------------------------------------------------------------------

def policy_metrics(query: Query, st: dict[str, Any]) -> Iterator[Any]:
    policy = st.get("policy")
    if policy is None:
        return
    yield counter("policy_rule_verdicts", "Policy service answers by the rule that decided.",
                  ["rule"], (((rule,), n) for rule, n in sorted(policy.get("verdicts", {}).items())
                             if rule != "refunds"))
    yield counter("policy_verdicts", "Policy service answers by the rule that decided and the "
                  "action's first word.", ["rule", "action"],
                  (((rule, action), n)
                   for rule, actions in sorted(policy.get("verdict_actions", {}).items())
                   for action, n in sorted(actions.items())))
    yield counter("quota_hits", "Requests over a quota's limit, by quota.", ["quota"],
                  (((quota,), n) for quota, n in sorted(policy.get("quota_hits", {}).items())))


def verdicts_panel(ctx: PanelContext) -> str:
    if ctx.status.get("policy") is None:
        return _off("the policy service", "policy.listen")
    since = ctx.now - SPANS[ctx.span].seconds
    answer = ctx.query({"cmd": "verdicts", "since": since, "limit": VERDICT_ROWS})
    if not answer.get("ok"):
        return failed(answer)
    rows = answer.get("verdicts", [])
    by_action = Counter(str(r.get("action", "")).split(" ", 1)[0] or "?" for r in rows)
    note = f" (the newest {VERDICT_ROWS:,})" if len(rows) >= VERDICT_ROWS else ""
    return bar_chart(sorted(by_action.items()), f"policy verdicts other than DUNNO by action, "
                     f"last {ctx.span}{note}")


METRICS.register("risk", MetricProvider("risk", risk_metrics))
METRICS.register("accounting", MetricProvider("accounting", accounting_metrics))
METRICS.register("policy", MetricProvider("policy", policy_metrics))
for _panel in (Panel("suspended", "suspended accounts", suspended_panel, needs="risk", wide=True),
               Panel("messages", "messages sent and received", messages_panel,
                     needs="accounting"),
               Panel("senders", "top SASL senders", senders_panel, needs="accounting"),
               Panel("verdicts", "policy verdicts by action", verdicts_panel, needs="policy")):
    PANELS.register(_panel.name, _panel)
ACTIONS.register("unsuspend", ("unsuspend", "user"))
