"""One schema, two engines: the mechanical translation of the store's portable SQL (written for
SQLite, `?` placeholders, INSERT ... ON CONFLICT ... DO UPDATE) into PostgreSQL's."""

from __future__ import annotations

import re
from functools import lru_cache

# Identifiers our schema uses that PostgreSQL reserves; quoted there ("user" works in SQLite
# too, but the shipped SQL spells them bare and must not be edited).
_RESERVED = re.compile(r"(?<![\"\w])(user|offset)(?![\"\w])", re.IGNORECASE)
# SQLite's INTEGER PRIMARY KEY is the rowid, given a value when the INSERT leaves it out
# (AUTOINCREMENT or not): PostgreSQL's form of that is a BIGSERIAL.
_AUTOINC = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(?:\s+AUTOINCREMENT)?\b", re.IGNORECASE)
_TYPES = ((re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
          (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT"),
          (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"))
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+(INTO\s.*)$", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r"('(?:[^']|'')*')")


def _outside_strings(sql: str, fix) -> str:  # type: ignore[no-untyped-def]
    """Apply fix() to the parts of sql that are not string literals."""
    parts = _QUOTED.split(sql)
    return "".join(p if i % 2 else fix(p) for i, p in enumerate(parts))


def _pg_code(part: str) -> str:
    part = _AUTOINC.sub("BIGSERIAL PRIMARY KEY", part)
    for pattern, repl in _TYPES:
        part = pattern.sub(repl, part)
    part = _RESERVED.sub(lambda m: f'"{m.group(1).lower()}"', part)
    return part.replace("?", "%s")   # psycopg's placeholder


@lru_cache(maxsize=512)
def to_postgresql(sql: str) -> str:
    """The PostgreSQL form of one portable statement (cached: the store repeats them)."""
    ignore = _OR_IGNORE.match(sql)
    if ignore:
        sql = f"INSERT {ignore.group(1).rstrip().rstrip(';')} ON CONFLICT DO NOTHING"
    if re.match(r"^\s*INSERT\s+OR\s+REPLACE\b", sql, re.IGNORECASE):
        raise ValueError("INSERT OR REPLACE is SQLite-only: write INSERT ... ON CONFLICT "
                         "(key) DO UPDATE SET col = excluded.col")
    # psycopg reads % everywhere, string literals included: a literal % is doubled first.
    return _outside_strings(sql.replace("%", "%%"), _pg_code)


def statements(migration: str) -> list[str]:
    """A migration's statements (split on ';' as the SQLite store always has)."""
    return [s.strip() for s in migration.split(";") if s.strip()]
