#!/usr/bin/env python3
"""The cost of each closed MessageRecord after the correlator, in-process: the stats-log line
(StatsLog.write), the store rows (state/accounting.save() into a fresh SQLite store, one
transaction per batch of ~2,000 records) and the risk engine (Engine.account() of every record
and rejected attempt, accounting enabled as the daemon builds it).

Also: account() one record at a time, the daemon's path (Daemon.on_record_batch per batch, or
on_records((record,)) per record where there is no batch variant), and the three stages per
batch in the daemon's order (engine, store, stats log). Run it from a checkout of another
version (copy the script there) for a before/after on the same records.
Records come from the real parser and correlator on a synthetic log (bench/messagelog.py, or
--log FILE). --digest prints a hash of every output (stats-log bytes, store rows, engine state
and effects) to compare two versions' behaviour.
Usage: .venv/bin/python bench/records_bench.py [--log FILE] [--runs 3] [--digest]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from logwatch.daemon.accounting import GC_THRESHOLD  # noqa: E402
from logwatch.daemon.config import AccountingConfig, BanConfig, RelayConfig  # noqa: E402
from logwatch.daemon.statslog import StatsLog, format_records  # noqa: E402
from logwatch.engine.core import Engine  # noqa: E402
from logwatch.engine.messages import Correlator  # noqa: E402
from logwatch.parsing.messageparse import MessageParser  # noqa: E402
from logwatch.parsing.rules import load_ruleset  # noqa: E402
from logwatch.state import accounting as rows  # noqa: E402
from logwatch.state.store import Store  # noqa: E402

PIECE = 256 * 1024
BATCH = 2000


def batches(data: bytes) -> list[tuple[list, list, list, list]]:
    """(records, rejects, open rows, deleted) per batch of >= BATCH records."""
    parser, corr = MessageParser(load_ruleset([str(REPO / "rules")])), Correlator()
    out: list[tuple[list, list, list, list]] = []
    recs: list = []
    rejs: list = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + PIECE) + 1 if start + PIECE < len(data) \
            else len(data)
        r, j = corr.feed(parser.parse(data[start:end]))
        recs += r
        rejs += j
        start = end
        if len(recs) >= BATCH or start >= len(data):
            changed, deleted = corr.changes()
            out.append((recs, rejs, list(corr.rows(changed)), deleted))
            corr.saved(changed)
            recs, rejs = [], []
    return out


def time_statslog(work: list, tmp: Path) -> tuple[float, float]:
    """(seconds formatting, seconds StatsLog.write incl. fsync) for every batch."""
    t0 = time.perf_counter()
    for recs, *_ in work:
        format_records(recs)
    t1 = time.perf_counter()
    sl = StatsLog(str(tmp / "stats.log"))
    t2 = time.perf_counter()
    for recs, *_ in work:
        sl.write(recs)
    t3 = time.perf_counter()
    sl.close()
    return t1 - t0, t3 - t2


def time_store(work: list, tmp: Path) -> float:
    store = Store(tmp / "state.db")
    seq = 0
    t0 = time.perf_counter()
    for recs, _, open_rows, deleted in work:
        seq += len(recs)
        rows.save(store, open_rows, deleted, recs, seq + 1, seq)
    t1 = time.perf_counter()
    store.close()
    return t1 - t0


def make_engine(clock_at: float) -> Engine:
    return Engine(RelayConfig(), BanConfig(), clock=lambda: clock_at,
                  accounting=AccountingConfig(enabled=True))


def time_engine(work: list, clock_at: float, one_by_one: bool = False
                ) -> tuple[float, Engine, list]:
    """Engine.account_batch() per batch (where there is one), else account() per record."""
    engine = make_engine(clock_at)
    effects: list = []
    batch = None if one_by_one else getattr(engine, "account_batch", None)
    t0 = time.perf_counter()
    for recs, rejs, *_ in work:
        if batch is not None:
            effects += batch(recs)
            effects += batch(rejs)
        else:
            for rec in recs:
                effects += engine.account(rec)
            for rej in rejs:
                effects += engine.account(rej)
    t1 = time.perf_counter()
    return t1 - t0, engine, effects


def time_daemon(work: list, clock_at: float) -> float:
    """The risk engine as the daemon feeds it: Daemon.on_record_batch() per batch where there
    is one, else Daemon.on_records((record,)) per record (the Subscriber's calls)."""
    from types import SimpleNamespace

    from logwatch.daemon.app import Daemon

    def apply(effects: Any, positions: bool = False) -> None:
        if list(effects):       # Effects.apply(): nothing to do for an empty batch
            pass

    d: Any = SimpleNamespace(engine=make_engine(clock_at), fleet=None,
                             effects=SimpleNamespace(apply=apply), schedule_engine=lambda: None)
    batch = getattr(Daemon, "on_record_batch", None)
    d.on_record_batch = lambda records: batch(d, records)
    t0 = time.perf_counter()
    for recs, rejs, *_ in work:
        if batch is not None:
            batch(d, recs)
            batch(d, rejs)
        else:
            for rec in recs:
                Daemon.on_records(d, (rec,))
            for rej in rejs:
                Daemon.on_records(d, (rej,))
    return time.perf_counter() - t0


def time_in_order(work: list, tmp: Path, clock_at: float) -> dict[str, float]:
    """Each stage per batch in the daemon's order (risk engine at publish, store rows in the
    positions' transaction, then the stats log): each sees the records as warm as it would."""
    engine, store = make_engine(clock_at), Store(tmp / "order.db")
    sl = StatsLog(str(tmp / "order.log"))
    batch = getattr(engine, "account_batch", None)
    spent = dict.fromkeys(("engine", "store", "statslog"), 0.0)
    seq = 0
    for recs, rejs, open_rows, deleted in work:
        t0 = time.perf_counter()
        if batch is not None:
            batch(recs)
            batch(rejs)
        else:
            for rec in recs + rejs:
                engine.account(rec)
        t1 = time.perf_counter()
        seq += len(recs)
        rows.save(store, open_rows, deleted, recs, seq + 1, seq)
        t2 = time.perf_counter()
        sl.write(recs)
        t3 = time.perf_counter()
        spent["engine"] += t1 - t0
        spent["store"] += t2 - t1
        spent["statslog"] += t3 - t2
    store.close()
    sl.close()
    return spent


def digest(work: list, tmp: Path, clock_at: float) -> dict[str, str]:
    """Hashes of every output, to compare versions."""
    h = {}
    h["statslog"] = hashlib.sha256((tmp / "stats.log").read_bytes()).hexdigest()[:16]
    store = Store(tmp / "state.db")
    dump = "\n".join(store.db.iterdump())
    store.close()
    h["store"] = hashlib.sha256(dump.encode()).hexdigest()[:16]
    _, engine, effects = time_engine(work, clock_at)
    state = {"effects": [repr(e) for e in effects], "view": engine.accounts.view(None),
             "rows": engine.accounts.account_rows(), "stats": engine.accounts.stats(),
             "counts": engine.counts.drain(float("inf")), "history": engine.accounts.history_rows()}
    h["engine"] = hashlib.sha256(json.dumps(state, sort_keys=True, default=repr)
                                 .encode()).hexdigest()[:16]
    h["effects"] = str(len(effects))
    return h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", default="/tmp/ab/messages.log")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--digest", action="store_true")
    args = ap.parse_args()
    gc.set_threshold(*GC_THRESHOLD)
    work = batches(Path(args.log).read_bytes())
    n = sum(len(w[0]) for w in work)
    nrej = sum(len(w[1]) for w in work)
    clock_at = max(r.done_time for w in work for r in w[0]) + 60
    print(f"records {n} rejects {nrej} batches {len(work)}")
    best: dict[str, float] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            fmt, write = time_statslog(work, tmp)
            store = time_store(work, tmp)
            eng, *_ = time_engine(work, clock_at)
            eng1, *_ = time_engine(work, clock_at, one_by_one=True)
            daemon = time_daemon(work, clock_at)
            order = time_in_order(work, tmp, clock_at)
            for name, t in (("format", fmt), ("statslog", write), ("store", store),
                            ("engine", eng), ("account()", eng1), ("daemon", daemon),
                            *((f"{k} (in order)", v) for k, v in order.items())):
                best[name] = min(best.get(name, t), t)
            if args.digest:
                print("digest", json.dumps(digest(work, tmp, clock_at), sort_keys=True))
                args.digest = False
    for name, t in best.items():
        print(f"{name:19s} {t:6.3f}s  {t / n * 1e6:6.2f} us/record  (best of {args.runs})")


if __name__ == "__main__":
    main()
