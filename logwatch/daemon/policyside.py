"""The daemon's side of the policy service: builds the Decider from the config, answers each
request (pure and in memory), and on the loop's "policy" timer hands the audit rows and
copies of the changed quota counters to the writer process (policywriter.py: the store and
the actions log), re-reads changed list files, and feeds S25R `score` notes to the engine. Also owns the check_sasl_access
table, whose entries come from contributors (set_sasl_entries)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from logwatch.daemon.factory import file_mtime, store_url
from logwatch.daemon.policywriter import PEER_MARGIN, Batch, PolicyWriter, write_batch
from logwatch.engine.policy import DUNNO, Decider, PolicyContext, PolicyRequest, Verdict
from logwatch.engine.policy.quotas import QuotaCheck
from logwatch.engine.policy.saslblock import parse_block_list
from logwatch.parsing.events import RELAY_DENIED, S25R, USER_UNKNOWN, Event
from logwatch.state.policystore import AuditRow, PolicyStore
from logwatch.util.safeio import read_capped

log = logging.getLogger("logwatchd.policy")

FLUSH_INTERVAL = 0.5          # audit rows and quota counters go to the writer this often ...
SNAPSHOT_ROWS = 250           # ... this many counter rows per turn of the loop (< 1 ms)
MAX_BACKLOG = 4               # batches queued for the writer before the loop stops copying
WAIT_WRITTEN = 10.0           # a reload, a stop, `verdicts`: wait this long for the writer
PRUNE_INTERVAL = 3600.0
CHECKPOINT_INTERVAL = 10.0    # SQLite: the writer checkpoints the WAL at least this often
PEER_ROWS = 500               # the peers' quota rows put into the windows per turn of the loop
LIST_MAX_BYTES = 16 << 20
BLOCK_LIST = "sasl-block-list"     # the block list's contributor name in the sasl table
_REFUND_KINDS = (USER_UNKNOWN, RELAY_DENIED)
QUOTA_PREFIX = "quota:"        # engine/policy/quotas.py: a quota's verdict rule is quota:<name>
MILTER_REJECT_RULE = "postfix-milter-reject-message"    # rules/postfix.yaml: user = queue id


def read_text(path: str) -> str:
    """A list or profile file (regular files only, capped); OSError when unreadable."""
    return read_capped(path, LIST_MAX_BYTES).decode("utf-8", errors="replace")


class PolicySide:
    """Decisions, audit, lists and the sasl table; the daemon calls setup() once, answer()
    per request (through the PolicyServer), flush() on its timer and close() at stop."""

    def __init__(self, loop: Any, parts: Any, feed: Callable[[Sequence[Event]], None],
                 error: Callable[[str], None]) -> None:
        self.loop = loop
        self.parts = parts
        self.feed = feed
        self.error = error
        self.cfg: Any = None
        self.context = PolicyContext(read_text=read_text)
        self.decider: Decider | None = None
        self.pending: list[AuditRow] = []
        self.writer: PolicyWriter | None = None
        self.counts: dict[str, int] = {}
        # For /metrics: answers by (rule, first word of the action), quota hits by quota.
        # Rule ids, actions and quota names come from the config: low cardinality.
        self.by_action: dict[tuple[str, str], int] = {}
        self.quota_hits: dict[str, int] = {}
        self.sasl_table: Any = None
        self.sasl_entries: dict[str, dict[str, str]] = {}
        self._mtimes: dict[str, int | None] = {}
        self._last_prune = 0.0
        self._last_checkpoint = 0.0
        self._peer_marks: dict[str, float] = {}     # peer node -> newest updated_at read
        self._peer_failed = False
        self._peer_rows: list[tuple[Any, ...]] = []  # from the writer, not yet in the windows
        self._peer_nodes: set[str] = set()
        self._reset_peers = False
        loop.on_timer("policy", self._on_timer)
        loop.on_timer("policy-peers", self._put_peer_rows)
        loop.on_timer("policy-notes", self.drain_notes)

    @property
    def enabled(self) -> bool:
        return self.cfg is not None and bool(self.cfg.policy.listen)

    @property
    def quotas(self) -> QuotaCheck | None:
        check = self.decider.check("quotas") if self.decider is not None else None
        return check if isinstance(check, QuotaCheck) else None

    # -- set-up and reload ------------------------------------------------------------

    def setup(self, cfg: Any, dry_run: bool) -> None:
        """Build from the config; the sasl table := the block list (and other contributors)."""
        self.cfg = cfg
        self._read_block_list()
        self.decider = Decider.build(cfg.policy, cfg.quotas, self.context)
        self._note_mtimes()
        self._open_sasl_table(cfg, dry_run)
        quotas = self.quotas
        store = PolicyStore(self.parts.store)
        self._peer_marks = {}          # new windows: the peers' rows are read afresh
        self._reset_peers = True       # (by the writer too)
        self._peer_rows = []
        if quotas is not None:
            loaded = quotas.load(store.load_quota_counts(), self.loop.clock())
            log.info("action=policy-quotas quotas=%d keys=%d", len(quotas.specs), loaded)
        store.prune_quota_counts([q.name for q in cfg.quotas])
        if self.enabled and self.writer is None:
            self.writer = self._start_writer()
        if self.enabled or cfg.policy.sasl_access_map:
            self.loop.call_at("policy", self.loop.clock() + FLUSH_INTERVAL)

    def _start_writer(self) -> PolicyWriter | None:
        """The writer process on its own connection to the same store (None: the loop
        writes, as when the process cannot start)."""
        main = self.parts.store
        url = store_url(self.cfg) if getattr(main, "shared", False) else f"sqlite://{main.path}"
        writer = PolicyWriter(url, getattr(main, "node", ""),
                              getattr(self.parts.actions, "path", None), main, self.error,
                              self._on_peer_rows)
        try:
            writer.start()
        except OSError as exc:
            log.warning("action=policy-writer-error error=%s (the loop writes instead)", exc)
            return None
        self.loop.register(writer.fileno(), self._on_writer)
        return writer

    def _on_writer(self, mask: int) -> None:
        writer = self.writer
        if writer is None:
            return
        writer.on_readable()
        if not writer.alive:          # it died: the loop writes from now on (logged)
            self.loop.unregister(writer.fileno())
            writer.close(0.0)
            self.writer = None

    def reconfigure(self, cfg: Any, dry_run: bool) -> None:
        """A reload: counters to the store, then everything rebuilt from the new config."""
        self.flush(self.loop.clock(), everything=True)
        self.setup(cfg, dry_run)

    def _open_sasl_table(self, cfg: Any, dry_run: bool) -> None:
        spec = cfg.policy.sasl_access_map
        if not spec:
            self.sasl_table = None
            return
        if self.sasl_table is None or str(self.sasl_table.spec) != spec:
            from logwatch.effectors.saslaccess import SaslAccessTable

            self.sasl_table = SaslAccessTable(spec, dry_run=dry_run,
                                              log=logging.getLogger("logwatchd.saslaccess"))
        self._sync_sasl()

    def set_sasl_entries(self, contributor: str, entries: Mapping[str, str]) -> None:
        """This contributor's entries of the check_sasl_access table (login -> action) are
        now exactly these; the table holds the union (the first contributor's action wins)."""
        self.sasl_entries[contributor] = dict(entries)
        self._sync_sasl()

    def _sync_sasl(self) -> None:
        if self.sasl_table is None:
            return
        union: dict[str, str] = {}
        for entries in self.sasl_entries.values():
            for user, action in entries.items():
                union.setdefault(user.lower(), action)
        try:
            self.sasl_table.sync(union)
        except Exception as exc:        # SaslAccessError, OSError: keep answering
            self.error(f"sasl access map: {exc}")
            log.error("action=sasl-access-error error=%s", exc)

    def _read_block_list(self) -> None:
        path = self.cfg.policy.sasl_block_list
        ids: frozenset[str] = frozenset()
        if path:
            try:
                ids, warnings = parse_block_list(read_text(path))
            except (OSError, UnicodeDecodeError) as exc:
                warnings = [f"cannot read: {exc}"]
                ids = self.context.sasl_blocked     # keep what we had
            for w in warnings:
                log.warning("action=sasl-block-list-warning file=%s %s", path, w)
        self.context.sasl_blocked = ids
        action = self.cfg.policy.sasl_block_action
        self.sasl_entries[BLOCK_LIST] = dict.fromkeys(sorted(ids), action)

    def _watched(self) -> list[str]:
        p = self.cfg.policy
        paths = [p.sasl_block_list, p.s25r_whitelist, p.s25r_blacklist]
        quotas = self.quotas
        if quotas is not None:
            paths += quotas.profile_paths()
        return [x for x in paths if x]

    def _note_mtimes(self) -> None:
        self._mtimes = {path: file_mtime(path) for path in self._watched()}

    def _check_files(self) -> None:
        changed = [p for p, m in self._mtimes.items() if file_mtime(p) != m]
        if not changed:
            return
        self._note_mtimes()
        log.info("action=policy-lists-reread files=%s", ",".join(changed))
        block_list = self.cfg.policy.sasl_block_list
        if block_list in changed:
            self._read_block_list()
            self._sync_sasl()
        quotas = self.quotas
        profiles = set(quotas.profile_paths()) if quotas is not None else set()
        if set(changed) & profiles:
            assert quotas is not None
            for w in quotas.reload_profiles(read_text):
                log.warning("action=quota-profile-warning %s", w)
        if set(changed) - {block_list} - profiles:
            # An S25R list: rebuild the checks (quota counters are kept in the same object).
            self.decider = Decider.build(self.cfg.policy, self.cfg.quotas, self.context)
            if quotas is not None:
                self.decider.checks = [(n, quotas if n == "quotas" else c)
                                       for n, c in self.decider.checks]

    # -- requests ---------------------------------------------------------------------

    def answer(self, req: PolicyRequest) -> str:
        """The action for one request: memory only, no I/O (the audit is written later)."""
        assert self.decider is not None
        now = self.loop.clock()
        self.context.engine = self.parts.engine
        verdict = self.decider.decide(req, now)
        self.counts[verdict.rule] = self.counts.get(verdict.rule, 0) + 1
        key = (verdict.rule, verdict.action.partition(" ")[0])
        self.by_action[key] = self.by_action.get(key, 0) + 1
        if verdict.rule.startswith(QUOTA_PREFIX):
            quota = verdict.rule[len(QUOTA_PREFIX):]
            self.quota_hits[quota] = self.quota_hits.get(quota, 0) + 1
        if self.context.notes and not self.loop.armed("policy-notes"):
            self.loop.call_at("policy-notes", now)      # after this reply is sent
        if verdict.action != DUNNO:
            self.pending.append(_audit_row(req, verdict, now))
        return verdict.action

    def test(self, attrs: Mapping[str, str]) -> Verdict:
        """policy-test: the verdict for these attributes, changing no counter."""
        assert self.decider is not None
        self.context.engine = self.parts.engine
        req = PolicyRequest({str(k): str(v) for k, v in attrs.items()})
        # commit=False: no check counts or notes anything (S25R scores only on commit).
        return self.decider.decide(req, self.loop.clock(), commit=False)

    def observe(self, events: Iterable[Event]) -> None:
        """Log-side rejections refund what they took back (quotas): a recipient rejected by
        name (User unknown, Relay access denied), or a whole message a milter rejected."""
        quotas = self.quotas
        if quotas is None:
            return
        now = self.loop.clock()
        for ev in events:
            if not ev.user:
                continue
            if ev.rule == MILTER_REJECT_RULE:
                refunded = quotas.refund_message(ev.user, now)
            elif ev.kind in _REFUND_KINDS and "smtpd" in ev.program:
                refunded = quotas.refund(ev.ip, ev.user, now)
            else:
                continue
            if refunded:
                self.counts["refunds"] = self.counts.get("refunds", 0) + 1

    # -- the timer ----------------------------------------------------------------------

    def _on_timer(self, now: float) -> None:
        self.loop.call_at("policy", now + FLUSH_INTERVAL)
        try:
            self._check_files()
            if self.flush(now):     # a flood: the rest on the next turn, after the sockets
                self.loop.call_at("policy", now)
        except Exception as exc:        # the store full or broken: keep answering
            self.error(f"policy: {exc}")
            log.exception("action=policy-flush-error")

    def drain_notes(self, now: float) -> None:
        self.loop.cancel("policy-notes")    # one-shot: left armed, every select() would spin
        notes, self.context.notes[:] = list(self.context.notes), []
        when = datetime.fromtimestamp(now, UTC)
        self.feed([Event(when, S25R, n.ip, None, "smtp", "logwatchd/policy", n.rule, None)
                   for n in notes if n.kind == S25R])

    def flush(self, now: float, everything: bool = False) -> bool:
        """Hand the audit rows and (up to SNAPSHOT_ROWS of) the changed quota counters to the
        writer thread; everything: all of them, and wait until they are written. True when
        counters are left for the next turn of the loop."""
        if self.parts.store is None:
            return False
        quotas = self.quotas
        rows, self.pending = tuple(self.pending), []
        limit = 1 << 62 if everything else SNAPSHOT_ROWS
        if self.writer is not None and self.writer.pending >= MAX_BACKLOG and not everything:
            limit = 0       # the writer is behind: the keys stay in the dirty sets (no copies)
        counts = tuple(quotas.take_dirty_copies(limit)) if quotas is not None else ()
        prune = now - self._last_prune >= PRUNE_INTERVAL
        if prune:
            self._last_prune = now
            if quotas is not None:
                quotas.expire(now)
        checkpoint = now - self._last_checkpoint >= CHECKPOINT_INTERVAL
        if checkpoint:
            self._last_checkpoint = now
        peers = quotas is not None and getattr(self.parts.store, "shared", False)
        batch = Batch(rows, counts, now - self.cfg.policy.audit_retention if prune else None,
                      checkpoint, now, read_peers=peers, reset_peers=self._reset_peers)
        if self.writer is not None and self.writer.put(batch):
            self._reset_peers = False
            if everything and not self.writer.wait(WAIT_WRITTEN):
                log.error("action=policy-writer-slow backlog=%d", self.writer.pending)
        else:
            write_batch(self.parts.store, self.parts.actions, batch)
            if peers:
                assert quotas is not None
                self._read_peers(quotas, PolicyStore(self.parts.store))
        return quotas is not None and quotas.dirty_count() > 0

    def _on_peer_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """The writer read these changed rows of the peers: into the windows, a slice a turn."""
        self._peer_rows += rows
        self._peer_nodes.update(str(r[0]) for r in rows)
        if not self.loop.armed("policy-peers"):
            self.loop.call_at("policy-peers", self.loop.clock())

    def _put_peer_rows(self, now: float) -> None:
        self.loop.cancel("policy-peers")
        chunk, self._peer_rows = self._peer_rows[:PEER_ROWS], self._peer_rows[PEER_ROWS:]
        quotas = self.quotas
        if quotas is not None:
            quotas.put_peer_rows(chunk)
        if self._peer_rows:
            self.loop.call_at("policy-peers", now)

    def _read_peers(self, quotas: QuotaCheck, pstore: PolicyStore) -> None:
        """The other nodes' quota counts changed since the last read into the windows (a
        quota is enforced fleet-wide; the verdicts themselves never wait on the store)."""
        try:
            rows = pstore.peer_quota_counts(self._peer_marks, PEER_MARGIN)
        except Exception as exc:     # the store away: the peers' last counts are kept
            if not self._peer_failed:
                log.error("action=policy-peer-quotas result=failed error=%s", exc)
            self._peer_failed = True
            return
        self._peer_failed = False
        quotas.put_peer_rows(rows)
        for node, *_, updated_at in rows:
            if updated_at > self._peer_marks.get(node, float("-inf")):
                self._peer_marks[node] = updated_at

    def verdicts(self, since: float | None, ip: str | None, user: str | None,
                 limit: int) -> list[AuditRow]:
        self.flush(self.loop.clock(), everything=True)
        return PolicyStore(self.parts.store).verdicts(since, ip, user, limit)

    def status(self) -> dict[str, Any]:
        """For `logwatchctl status`: verdicts by rule, the server's counters, sizes."""
        quotas = self.quotas
        server = next((s for s in self.parts.services if s.name == "policy"), None)
        stats = vars(server.stats) if server is not None else {}
        actions: dict[str, dict[str, int]] = {}
        for (rule, action), n in self.by_action.items():
            actions.setdefault(rule, {})[action] = n
        return {"verdicts": dict(self.counts), "verdict_actions": actions,
                "quota_hits": dict(self.quota_hits), **stats,
                "clients": len(server.clients) if server is not None else 0,
                "quota_keys": sum(len(w.keys) for w in quotas.windows) if quotas else 0,
                "writer_backlog": self.writer.pending if self.writer is not None else None,
                "quota_peers": sorted(set(self._peer_marks) | self._peer_nodes),
                "sasl_blocked": len(self.context.sasl_blocked)}

    def close(self) -> None:
        if self.cfg is not None:
            self.flush(self.loop.clock(), everything=True)
        if self.writer is not None:
            self.loop.unregister(self.writer.fileno())
            self.writer.close()
            self.writer = None


def _audit_row(req: PolicyRequest, verdict: Verdict, now: float) -> AuditRow:
    def cut(text: str) -> str:
        return text[:512]
    return AuditRow(now, cut(req.instance), cut(req.queue_id), req.client_address or "",
                    cut(req.client_name), cut(req.sasl_username), cut(req.sender),
                    cut(req.recipient), verdict.rule, verdict.action)
