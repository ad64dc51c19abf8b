"""A Postfix policy request (SMTPD_POLICY_README: `name=value` lines ended by an empty line) and
its parsing from the wire. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from logwatch.parsing.events import normalize_ip

MAX_REQUEST = 64 * 1024      # bytes of one request, its empty line included
MAX_NAME = 64                # attribute names are short words (request, client_address, ...)


class MalformedRequest(ValueError):
    """The bytes are no policy request; the message says why (logged, answered DUNNO)."""


def _int(text: str) -> int:
    return int(text) if text.isdigit() and len(text) <= 18 else 0


@dataclass(frozen=True)
class PolicyRequest:
    """The attributes of one request; unknown attributes are kept and ignored."""

    attrs: dict[str, str]

    def get(self, name: str) -> str:
        return self.attrs.get(name, "")

    @property
    def request(self) -> str:
        return self.get("request")

    @property
    def protocol_state(self) -> str:
        return self.get("protocol_state").upper()

    @cached_property
    def client_address(self) -> str | None:
        """The client's IP, normalised (IPv4-mapped -> IPv4); None when absent or invalid."""
        raw = self.get("client_address")
        return normalize_ip(raw) if raw and len(raw) <= 64 else None

    @property
    def client_name(self) -> str:
        return self.get("client_name")

    @property
    def reverse_client_name(self) -> str:
        return self.get("reverse_client_name")

    @property
    def helo_name(self) -> str:
        return self.get("helo_name")

    @property
    def sasl_username(self) -> str:
        return self.get("sasl_username")

    @property
    def sasl_method(self) -> str:
        return self.get("sasl_method")

    @property
    def sender(self) -> str:
        return self.get("sender")

    @property
    def recipient(self) -> str:
        return self.get("recipient")

    @property
    def recipient_count(self) -> int:
        return _int(self.get("recipient_count"))

    @property
    def size(self) -> int:
        return _int(self.get("size"))

    @property
    def instance(self) -> str:
        return self.get("instance")

    @property
    def queue_id(self) -> str:
        return self.get("queue_id")


def parse_request(block: bytes) -> PolicyRequest:
    """One request's lines (without the ending empty line); MalformedRequest if it is none.

    A line without '=', an empty or overlong name, or a name given twice makes the whole
    request malformed: a value can never carry a second attribute (a newline ends a line), and
    refusing duplicates means no attribute can be given again to override the real one.
    """
    text = block.decode("utf-8", errors="replace")
    attrs: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        name, sep, value = line.partition("=")
        if not sep or not name or len(name) > MAX_NAME or not name.isascii() \
                or not name.replace("_", "").isalnum():
            raise MalformedRequest(f"not a name=value line: {line[:80]!r}")
        if name in attrs:
            raise MalformedRequest(f"attribute {name!r} given twice")
        attrs[name] = value
    if attrs.get("request") != "smtpd_access_policy":
        raise MalformedRequest(f"request={attrs.get('request', '')[:40]!r} is not "
                               "smtpd_access_policy")
    return PolicyRequest(attrs)


def split_requests(buf: bytearray) -> tuple[list[bytes], bool]:
    """Take the complete requests off the front of buf: (request blocks, too_long). too_long:
    the unfinished rest is over MAX_REQUEST (the connection must be closed)."""
    blocks = []
    while True:
        end = buf.find(b"\n\n")
        if end < 0:
            return blocks, len(buf) > MAX_REQUEST
        if end + 2 > MAX_REQUEST:
            return blocks, True
        blocks.append(bytes(buf[:end]))
        del buf[:end + 2]
