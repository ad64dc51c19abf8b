"""Postfix check_sasl_access table writer: SASL login name -> access(5) action.

smtpd's check_sasl_access looks up the whole SASL login name as the client sent it (with any
@domain) in an access(5) table; hash: and lmdb: tables fold keys to lower case both when postmap
writes them and when smtpd looks them up, so keys here are stored lower case and matching is
case-insensitive. The table is small (blocked or suspended IDs), so every change is a full
atomic rebuild: postmap into a temporary directory beside the map, then rename into place (a
running smtpd notices the unlinked file and reopens it).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping

from logwatch.effectors import runner
from logwatch.effectors.relaymap import (
    MapSpec,
    RelayMapError,
    _check_writable_dir,
    parse_spec,
    rebuild_beside,
)

_POSTMAP_TIMEOUT = 300.0
# A login name longer than this is no SASL ID any server hands out; refusing it keeps postmap's
# input and our logs bounded.
MAX_KEY = 512


class SaslAccessError(Exception):
    """The table cannot be written or read: bad spec, unwritable directory, postmap failed."""


def key_problem(name: str) -> str | None:
    """Why `name` cannot be a check_sasl_access key, or None (the caller lower-cases it)."""
    if not isinstance(name, str) or not name:
        return "empty"
    if len(name) > MAX_KEY:
        return "too long"
    if not name.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in name):
        return "not printable ASCII without blanks"
    if name.startswith("#"):
        return "starts with # (postmap would read a comment)"
    return None


def value_problem(action: str) -> str | None:
    """Why `action` cannot be an access(5) right-hand side, or None."""
    if (not isinstance(action, str) or not action or action != action.strip()
            or len(action) > 1000 or not action.isascii()
            or any(ord(c) < 32 or ord(c) == 127 for c in action)):
        return "must be non-empty printable ASCII without control characters"
    return None


class SaslAccessTable:
    """check_sasl_access table: login name -> action (e.g. "REJECT 5.7.1 ..."); see sync()."""

    def __init__(self, spec: str, *, dry_run: bool = False,
                 log: logging.Logger | None = None,
                 postfix_config_dir: str | None = None) -> None:
        self.log = log or logging.getLogger("logwatchd.saslaccess")
        self.dry_run = dry_run
        try:
            self.spec: MapSpec = parse_spec(spec)
        except RelayMapError as exc:
            raise SaslAccessError(str(exc).replace("relay map", "sasl access map")) from None
        self._postmap = ["postmap"]
        if postfix_config_dir is not None:
            self._postmap += ["-c", postfix_config_dir]
        self._entries: dict[str, str] | None = None    # what the file holds; None: unknown
        if not dry_run:
            try:
                _check_writable_dir(os.path.dirname(self.spec.path), f"sasl access map {spec}")
            except RelayMapError as exc:
                raise SaslAccessError(str(exc)) from None
            if shutil.which("postmap") is None:
                raise SaslAccessError(f"sasl access map {spec}: postmap not found "
                                      f"(install {self.spec.maptype.package})")

    def sync(self, entries: Mapping[str, str]) -> bool:
        """Make the table hold exactly these entries; True if it was rebuilt, False if it
        already did (or in a dry run). Invalid keys or values are logged and left out."""
        wanted = self._clean(entries)
        if self.dry_run:
            if wanted != self._entries:
                self.log.info("action=sasl-access-sync map=%s entries=%d dry_run=1",
                              self.spec, len(wanted))
                self._entries = wanted
            return False
        if self._entries is None and os.path.isfile(self.spec.file):
            self._entries = self._read()
        if wanted == self._entries and os.path.isfile(self.spec.file):
            return False
        self._rebuild(wanted)
        self._entries = wanted
        self.log.info("action=sasl-access-sync map=%s entries=%d", self.spec, len(wanted))
        return True

    def entries(self) -> dict[str, str]:
        """What the table holds now (read from the file once; {} when it is missing)."""
        if self._entries is None:
            self._entries = {} if self.dry_run or not os.path.isfile(self.spec.file) \
                else self._read()
        return dict(self._entries)

    # -- internals ----------------------------------------------------------------------

    def _clean(self, entries: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, action in entries.items():
            problem = key_problem(name) or value_problem(action)
            if problem is not None:
                # Never let a name that could split a postmap line reach its input.
                self.log.error("action=sasl-access-skip map=%s user=%r reason=%r",
                               self.spec, name, problem)
                continue
            out[name.lower()] = action
        return dict(sorted(out.items()))

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = runner.run(self._postmap + args, "", timeout=_POSTMAP_TIMEOUT, check=False)
        except runner.ToolError as exc:
            raise SaslAccessError(f"sasl access map {self.spec}: cannot run postmap: "
                                  f"{exc}") from exc
        if check and (proc.returncode != 0 or "fatal:" in proc.stderr):
            raise SaslAccessError(f"sasl access map {self.spec}: postmap {' '.join(args)} "
                                  f"failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def _read(self) -> dict[str, str]:
        proc = self._run(["-s", str(self.spec)], check=False)
        if proc.returncode != 0:
            self.log.warning("action=sasl-access-read map=%s result=unreadable", self.spec)
            return {}
        out: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("\t") if "\t" in line else line.partition(" ")
            if key:
                out[key] = value.strip()
        return dict(sorted(out.items()))

    def _rebuild(self, entries: dict[str, str]) -> None:
        try:
            rebuild_beside(self.spec, (f"{k}\t{v}\n" for k, v in entries.items()),
                           lambda source: self._run([source]))
        except OSError as exc:
            raise SaslAccessError(f"sasl access map {self.spec}: rebuild failed: {exc}") from exc
