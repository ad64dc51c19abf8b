"""A private, throw-away PostgreSQL server for the fleet tests and bench: Debian's server
binaries run as the postgres user on a temp data directory, a free TCP port on 127.0.0.1 and a
socket directory of its own (sockets cross network namespaces: nodes in a netns use it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from needs import require, unavailable

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DBNAME = "logwatchd"


def _as_postgres(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd="/")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def url(self, db: str = DBNAME) -> str:
        """Through the socket directory: works from inside any network namespace."""
        return f"postgresql://postgres@/{db}?host={self.sockdir}&port={self.port}"

    def tcp_url(self, db: str = DBNAME) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=60")
        proc = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                             str(self.root / "server.log"), "-w", "-t", "60", "-o", opts, "start"])
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {proc.stdout}{proc.stderr}{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def sql(self, query: str, params: tuple = (), db: str = DBNAME) -> list[tuple]:
        """One statement on its own connection; its rows (empty for commands)."""
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@contextmanager
def postgres_server() -> Iterator[PgServer]:
    """initdb + pg_ctl start in a temp dir, the logwatchd database created; stopped and
    removed afterwards whatever happens."""
    require("root", "runuser", "psycopg")
    if not (PG_BIN / "initdb").exists():
        unavailable(f"needs PostgreSQL 15's server ({PG_BIN}/initdb: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="lw-pg-"))
    os.chmod(root, 0o755)
    server = PgServer(root, _free_port())
    server.sockdir.mkdir()
    shutil.chown(root, "postgres", "postgres")
    shutil.chown(server.sockdir, "postgres", "postgres")
    started = False
    try:
        proc = _as_postgres([str(PG_BIN / "initdb"), "-D", str(server.data), "-A", "trust",
                             "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
        if proc.returncode != 0:
            raise RuntimeError(f"initdb: {proc.stdout}{proc.stderr}")
        server.start()
        started = True
        server.sql(f"CREATE DATABASE {DBNAME}", db="postgres")
        yield server
    finally:
        if started:
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
