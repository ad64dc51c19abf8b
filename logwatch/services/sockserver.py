"""The non-blocking connection core the socket services share (control, policy, web).

It accepts on a listening socket registered with the daemon's selector, keeps per-client
input/output buffers, reads, writes with backpressure (stops reading a client whose unread
answers exceed max_output) and drops clients at their deadline. A service subclasses it,
binds its own socket, and answers in on_data(conn): consume conn.inbuf, append to
conn.outbuf, set conn.closing to stop reading and close once the output is sent.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

Callback = Callable[[int], None]


def bind_unix(path: str, error: type[Exception], holder: str) -> socket.socket:
    """A stream socket bound at path, mode 0600 until the caller sets its own (umask around
    bind: nobody connects first); a stale socket of a crashed holder is replaced."""
    _remove_stale(path, error, holder)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise error(f"cannot bind {path}: {exc}") from exc
    finally:
        os.umask(old)
    return sock


def _remove_stale(path: str, error: type[Exception], holder: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise error(f"{path}: {exc}") from exc
    if not stat.S_ISSOCK(st.st_mode):
        # A wrong socket path in the config must not make us delete someone's file.
        raise error(f"{path} exists and is not a socket: refusing to remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)      # nobody listens: a leftover of a crashed process
        return
    finally:
        probe.close()
    raise error(f"{path}: another {holder} is already listening there")


@dataclass
class Conn:
    sock: socket.socket
    deadline: float             # dropped by expire_idle() at or after this
    peer: str = ""              # the remote IP of a TCP client, "" on a Unix socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closing: bool = False       # no more reading; dropped once outbuf is sent


@dataclass(frozen=True)
class Timeouts:
    """Deadlines as seconds from a client's last progress; None: that progress does not count."""

    connect: float
    read: float | None          # request bytes received
    write: float | None         # answer bytes sent


class SockServer:
    """Connection handling for one listening socket; the protocol lives in on_data()."""

    name = "sockserver"           # log lines: action=<name>-accept-error, <name>-error
    accept_burst = 1              # connections taken per readiness event
    max_output = 1 << 20
    peek_when_idle = False        # input already waiting counts as progress (expire_idle)
    accept_error_level = logging.ERROR

    def __init__(self, selector: selectors.BaseSelector, clock: Callable[[], float],
                 timeouts: Timeouts, log: logging.Logger) -> None:
        self.selector, self.clock, self.timeouts, self.log = selector, clock, timeouts, log
        self.sock: socket.socket | None = None
        self.clients: dict[int, Conn] = {}
        self.unix_path: str | None = None    # removed by close()

    # -- hooks -----------------------------------------------------------------------

    @property
    def max_clients(self) -> int:
        return 64

    def on_data(self, conn: Conn) -> None:
        """Answer what conn.inbuf holds (called after new input and after output drained)."""
        raise NotImplementedError

    def on_accepted(self, conn: Conn) -> None:
        """A client was accepted (counters)."""

    def on_idle_closed(self, count: int) -> None:
        """expire_idle() dropped count clients (log line, counters)."""

    def callback(self, fn: Callback) -> Callback:
        """What the selector holds for fn (the policy service marks its sockets urgent)."""
        return fn

    # -- listening -------------------------------------------------------------------

    def serve(self, sock: socket.socket) -> None:
        """Take over a bound, listening socket."""
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self.callback(self._accept))

    def close(self) -> None:
        """Drop every client, close the listening socket and remove its Unix socket file."""
        for fd in list(self.clients):
            self._drop(fd)
        if self.sock is None:
            return
        self.selector.unregister(self.sock)
        self.sock.close()
        self.sock = None
        if self.unix_path is not None:
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass

    def _accept(self, mask: int) -> None:
        assert self.sock is not None
        for _ in range(self.accept_burst):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:    # EMFILE: keep serving the clients we have
                self.log.log(self.accept_error_level, "action=%s-accept-error error=%s",
                             self.name, exc)
                return
            if len(self.clients) >= self.max_clients:
                self.expire_idle()    # idle clients must not keep a new one out
            if len(self.clients) >= self.max_clients:
                conn.close()
                continue
            conn.setblocking(False)
            peer = str(addr[0]) if isinstance(addr, tuple) else ""
            client = Conn(conn, self.clock() + self.timeouts.connect, peer)
            self.clients[conn.fileno()] = client
            self.on_accepted(client)
            self.selector.register(conn, selectors.EVENT_READ,
                                   self.callback(lambda m, c=client: self._io(c, m)))

    # -- deadlines -------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the first client times out (the daemon's "control" timer), or None."""
        return min((c.deadline for c in self.clients.values()), default=None)

    def expire_idle(self, now: float | None = None) -> int:
        """Drop the clients past their deadline; return how many."""
        now = self.clock() if now is None else now
        late = [fd for fd, c in self.clients.items()
                if c.deadline <= now and not (self.peek_when_idle and self._waiting(c, now))]
        for fd in late:
            self._drop(fd)
        if late:
            self.on_idle_closed(len(late))
        return len(late)

    def _waiting(self, conn: Conn, now: float) -> bool:
        """A request that arrived while the loop was busy (a long reload) is not idleness."""
        try:
            waiting = bool(conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False
        if waiting and self.timeouts.read is not None:
            conn.deadline = now + self.timeouts.read
        return waiting

    # -- I/O -------------------------------------------------------------------------

    def _drop(self, fd: int) -> None:
        conn = self.clients.pop(fd, None)
        if conn is None:
            return
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _io(self, conn: Conn, mask: int) -> None:
        try:
            self._serve(conn, mask)
        except Exception:             # whatever a client sends, the daemon goes on
            self.log.exception("action=%s-error peer=%s", self.name, conn.peer)
            self._drop(conn.sock.fileno())

    def _serve(self, conn: Conn, mask: int) -> None:
        if mask & selectors.EVENT_READ and not conn.closing and not self._read(conn):
            return
        if conn.outbuf and not self._write(conn):
            return
        if conn.closing and not conn.outbuf:
            self._drop(conn.sock.fileno())
            return
        want = selectors.EVENT_WRITE if conn.outbuf else 0
        if not conn.closing and len(conn.outbuf) <= self.max_output:
            want |= selectors.EVENT_READ
        key = self.selector.get_key(conn.sock)
        if want and want != key.events:
            self.selector.modify(conn.sock, want, key.data)

    def _read(self, conn: Conn) -> bool:
        """Read what is there and answer it; False if the client was dropped."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._drop(conn.sock.fileno())
            return False
        if not data:
            conn.closing = True       # EOF: answer what is buffered, then close
        else:
            if self.timeouts.read is not None:
                conn.deadline = self.clock() + self.timeouts.read
            conn.inbuf += data
            self.on_data(conn)
        return True

    def _write(self, conn: Conn) -> bool:
        """Send what the socket takes; False if the client was dropped."""
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn.sock.fileno())
            return False
        del conn.outbuf[:sent]
        if sent and self.timeouts.write is not None:
            conn.deadline = self.clock() + self.timeouts.write
        if conn.inbuf and len(conn.outbuf) <= self.max_output:
            self.on_data(conn)        # requests held back while the output was full
        return True
