"""Durable state: the store (SQLite WAL), pending writes, adoption, the state-directory lock."""
