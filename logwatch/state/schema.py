"""The store's schema: one list of migrations for SQLite and PostgreSQL (dialect.py
translates each for PostgreSQL); a database is at version len(MIGRATIONS) once migrated."""

from __future__ import annotations

# Each entry migrates the schema from version i to i+1; never edit a shipped entry, append one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE grants (
        ip TEXT PRIMARY KEY,
        user TEXT,
        service TEXT,
        granted_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX grants_expiry ON grants (expires_at);
    CREATE TABLE bans (
        net TEXT PRIMARY KEY,
        since REAL NOT NULL,
        expires_at REAL,
        score REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '{}',
        offences INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL DEFAULT 'auto'
    );
    CREATE TABLE offenders (
        net TEXT PRIMARY KEY,
        bans INTEGER NOT NULL,
        last_ban REAL NOT NULL
    );
    CREATE TABLE positions (
        path TEXT PRIMARY KEY,
        inode INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        fingerprint TEXT NOT NULL
    );
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        cursor TEXT NOT NULL
    );
    """,
    # 2: the policy service's audit of verdicts other than DUNNO, and its quota counters
    # (logwatch/state/policystore.py).
    """
    CREATE TABLE policy_verdicts (
        decided_at REAL NOT NULL,
        instance TEXT,
        queue_id TEXT,
        client_address TEXT,
        client_name TEXT,
        sasl_username TEXT,
        sender TEXT,
        recipient TEXT,
        rule TEXT NOT NULL,
        action TEXT NOT NULL
    );
    CREATE INDEX policy_verdicts_time ON policy_verdicts (decided_at);
    CREATE TABLE policy_quota_counts (
        quota TEXT NOT NULL,
        qkey TEXT NOT NULL,
        slice_len REAL NOT NULL,
        counts TEXT NOT NULL,
        PRIMARY KEY (quota, qkey)
    );
    """,
    # 3: accounting (state/accounting.py): open messages, message records (the stats log is
    # written from them; kept `accounting.keep` for logwatchctl messages), sequence marks.
    """
    CREATE TABLE acct_open (
        host TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (host, queue_id)
    );
    CREATE TABLE acct_records (
        seq BIGINT PRIMARY KEY,
        done_time DOUBLE PRECISION NOT NULL,
        sasl_user TEXT NOT NULL,
        client_ip TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX acct_records_time ON acct_records (done_time);
    CREATE INDEX acct_records_user ON acct_records (sasl_user, done_time);
    CREATE TABLE acct_meta (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    """,
    # 4: account risk (logwatch/engine/accounts.py) and counts over time (logwatch/state/counts.py).
    """
    CREATE TABLE suspensions (
        sasl_user TEXT PRIMARY KEY,
        since REAL NOT NULL,
        expires_at REAL NOT NULL,
        score REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '{}',
        offences INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL DEFAULT 'auto'
    );
    CREATE TABLE suspension_history (
        sasl_user TEXT PRIMARY KEY,
        suspensions INTEGER NOT NULL,
        last_suspension REAL NOT NULL
    );
    CREATE TABLE account_windows (
        sasl_user TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        newest REAL NOT NULL
    );
    CREATE TABLE counts (
        series TEXT NOT NULL,
        step INTEGER NOT NULL,
        t BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (series, step, t)
    );
    """,
    # 5: the fleet (issue 17). Positions and cursors (the firewall identity too) are keyed
    # by node; grants and bans record the node that decided them; nodes lists who is alive.
    """
    CREATE TABLE node_positions (
        node TEXT NOT NULL,
        path TEXT NOT NULL,
        inode INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (node, path)
    );
    INSERT INTO node_positions (node, path, inode, dev, offset, fingerprint)
        SELECT '', path, inode, dev, offset, fingerprint FROM positions;
    DROP TABLE positions;
    ALTER TABLE node_positions RENAME TO positions;
    CREATE TABLE node_cursors (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        cursor TEXT NOT NULL,
        PRIMARY KEY (node, name)
    );
    INSERT INTO node_cursors (node, name, cursor) SELECT '', name, cursor FROM cursors;
    DROP TABLE cursors;
    ALTER TABLE node_cursors RENAME TO cursors;
    ALTER TABLE grants ADD COLUMN node TEXT NOT NULL DEFAULT '';
    ALTER TABLE bans ADD COLUMN node TEXT NOT NULL DEFAULT '';
    CREATE TABLE nodes (
        node TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL
    )
    """,
    # 6: accounting keyed by node (a shared store): each node numbers its own records, keeps
    # its own open messages and sequence marks; the rows of a single machine get node ''.
    """
    CREATE TABLE node_acct_open (
        node TEXT NOT NULL,
        host TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (node, host, queue_id)
    );
    INSERT INTO node_acct_open (node, host, queue_id, state)
        SELECT '', host, queue_id, state FROM acct_open;
    DROP TABLE acct_open;
    ALTER TABLE node_acct_open RENAME TO acct_open;
    CREATE TABLE node_acct_records (
        node TEXT NOT NULL,
        seq BIGINT NOT NULL,
        done_time DOUBLE PRECISION NOT NULL,
        sasl_user TEXT NOT NULL,
        client_ip TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (node, seq)
    );
    INSERT INTO node_acct_records (node, seq, done_time, sasl_user, client_ip, record)
        SELECT '', seq, done_time, sasl_user, client_ip, record FROM acct_records;
    DROP TABLE acct_records;
    ALTER TABLE node_acct_records RENAME TO acct_records;
    CREATE INDEX acct_records_time ON acct_records (done_time);
    CREATE INDEX acct_records_user ON acct_records (sasl_user, done_time);
    CREATE TABLE node_acct_meta (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (node, name)
    );
    INSERT INTO node_acct_meta (node, name, value) SELECT '', name, value FROM acct_meta;
    DROP TABLE acct_meta;
    ALTER TABLE node_acct_meta RENAME TO acct_meta
    """,
    # 7: the policy service's quota counters keyed by node (a shared store): each node writes
    # its own counts; the peers read the rows changed since (updated_at, the writer's clock)
    # and add them to their windows (engine/policy/quotas.py, daemon/policyside.py).
    """
    CREATE TABLE node_policy_quota_counts (
        node TEXT NOT NULL,
        quota TEXT NOT NULL,
        qkey TEXT NOT NULL,
        slice_len REAL NOT NULL,
        counts TEXT NOT NULL,
        updated_at REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (node, quota, qkey)
    );
    INSERT INTO node_policy_quota_counts (node, quota, qkey, slice_len, counts)
        SELECT '', quota, qkey, slice_len, counts FROM policy_quota_counts;
    DROP TABLE policy_quota_counts;
    ALTER TABLE node_policy_quota_counts RENAME TO policy_quota_counts;
    CREATE INDEX policy_quota_counts_updated ON policy_quota_counts (node, updated_at)
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
