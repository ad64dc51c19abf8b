"""Postfix relay map writer (pop-before-smtp): keeps hash: or lmdb: tables of granted IPs.

The table types are entries of MAP_TYPES (one module each: hash.py, lmdb.py); this module is
the type-independent core.

Incremental changes go through `postmap -i -r` / `postmap -d -` (Postfix's own writer, under
the exclusive lock that Postfix's shared lookup locks respect); a full rebuild writes a new
file beside the map and renames it into place. For hash: maps every change moves the file's
mtime to a new second, because a running smtpd only notices a changed table by its st_mtime
(seconds) or by the file being unlinked; the README section on the relay map has the details.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from logwatch.clock import Clock, wall
from logwatch.effectors import runner
from logwatch.parsing.events import normalize_ip
from logwatch.registry import Registry

_NS = 1_000_000_000
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_POSTMAP_TIMEOUT = 300.0


class RelayMapError(Exception):
    """The relay map cannot be used: bad spec, unwritable directory, or postmap failed."""


@dataclass(frozen=True, slots=True)
class MapType:
    """One Postfix table type: the file postmap writes and how changes must be made."""

    name: str
    suffix: str                                   # postmap's file is PATH + suffix
    structure_problem: Callable[[str], str | None]   # header check of a whole map, or None
    bump_mtime: bool = False      # smtpd sees in-place changes only by a later st_mtime second
    lock_insert: bool = False     # postmap -i takes no lock: hold an fcntl write lock around it
    package: str = "postfix"      # the Debian package(s) that give postmap this type


# The relay-map types (hash.py, lmdb.py register themselves at the end of this module).
MAP_TYPES: Registry[MapType] = Registry("relay map type")


@dataclass(frozen=True, slots=True)
class MapSpec:
    """A parsed Postfix table name such as hash:/etc/postfix/pop-before-smtp."""

    type: str
    path: str

    @property
    def maptype(self) -> MapType:
        """The registered type of this map."""
        return MAP_TYPES.get(self.type)

    @property
    def file(self) -> str:
        """The file postmap writes (path plus the type's suffix)."""
        return self.path + self.maptype.suffix

    def __str__(self) -> str:
        return f"{self.type}:{self.path}"


def parse_spec(spec: str) -> MapSpec:
    """Parse "TYPE:/path" with a registered TYPE (hash, lmdb); RelayMapError otherwise."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in MAP_TYPES:
        raise RelayMapError(f"relay map {spec!r}: must be TYPE:PATH with TYPE one of "
                            f"{', '.join(MAP_TYPES.names())} (Postfix table notation)")
    if not os.path.isabs(path) or "\n" in path or "\0" in path:
        raise RelayMapError(f"relay map {spec!r}: the map path must be absolute")
    for other in MAP_TYPES:
        if other.suffix and path.endswith(other.suffix):
            raise RelayMapError(f"relay map {spec!r}: give the map path without the "
                                f"{other.suffix.lstrip('.')!r} suffix, as Postfix does")
    return MapSpec(kind, os.path.normpath(path))


def _check_value(value: str) -> str:
    if (not value or value != value.strip() or not value.isascii()
            or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise RelayMapError(
            f"relay map value {value!r}: must be non-empty ASCII text without control "
            "characters or surrounding blanks (e.g. OK, permit, or a restriction class name)")
    return value


class RelayMap:
    """One Postfix lookup table of granted client IPs; see open_relay_map()."""

    def __init__(self, spec: MapSpec, value: str, text_file: str | None, dry_run: bool,
                 log: logging.Logger, postfix_config_dir: str | None = None,
                 clock: Clock = wall) -> None:
        self.spec = spec
        self.clock = clock
        self.value = value
        self.text_file = text_file
        self.dry_run = dry_run
        self.log = log
        self._postmap = ["postmap"]
        if postfix_config_dir is not None:
            self._postmap += ["-c", postfix_config_dir]
        # Current grants, in grant order; None until known (rebuild() or read from the map).
        self._grants: dict[str, None] | None = None

    # -- public interface ---------------------------------------------------------------

    def add(self, ips: Iterable[str]) -> None:
        """Grant relaying to these IPs; durable and visible to Postfix when it returns."""
        # -r: replace an existing entry silently (a refresh, or a changed value).
        changed = self._change(ips, "add", ["-i", "-r"], lambda ip: f"{ip} {self.value}\n")
        if changed is not None and changed[1] is not None:
            keys, grants = changed
            grants.update(dict.fromkeys(keys))
            self._write_text()

    def remove(self, ips: Iterable[str]) -> None:
        """Revoke these IPs (absent ones are fine); visible to Postfix when it returns."""
        # postmap -d exits 1 when none of the keys was present: not an error for us.
        changed = self._change(ips, "remove", ["-d", "-"], lambda ip: f"{ip}\n", ok_codes=(0, 1))
        if changed is not None and changed[1] is not None:
            keys, grants = changed
            for ip in keys:
                grants.pop(ip, None)
            self._write_text()

    def _change(self, ips: Iterable[str], action: str, args: list[str],
                line: Callable[[str], str], ok_codes: tuple[int, ...] = (0,),
                ) -> tuple[list[str], dict[str, None] | None] | None:
        """One postmap batch for add or remove, each key logged: (keys, the known grants to
        update, or None), or None when nothing was written (no keys, or a dry run)."""
        keys = self._keys(ips, action)
        if not keys:
            return None
        if self.dry_run:
            for ip in keys:
                self.log.info("action=relay-%s ip=%s map=%s dry_run=1", action, ip, self.spec)
            return None
        grants = self._known_grants()
        self._update(args, "".join(map(line, keys)), ok_codes=ok_codes)
        for ip in keys:
            self.log.info("action=relay-%s ip=%s map=%s", action, ip, self.spec)
        return keys, grants

    def rebuild(self, ips: Iterable[str]) -> None:
        """Replace the whole map with exactly these IPs: a new file renamed into place."""
        keys = self._keys(ips, "rebuild")
        if self.dry_run:
            self.log.info("action=relay-rebuild map=%s entries=%d dry_run=1", self.spec, len(keys))
            return
        started = time.monotonic()
        self._rebuild_file(keys)
        self._grants = dict.fromkeys(keys)
        self._write_text()
        self.log.info("action=relay-rebuild map=%s entries=%d seconds=%.3f", self.spec,
                      len(keys), time.monotonic() - started)

    def check(self) -> bool:
        """True if the map file exists and Postfix can read it (a probe lookup succeeds)."""
        if self.dry_run:
            return True
        try:
            if not os.path.isfile(self.spec.file):
                self.log.warning("action=relay-check map=%s result=missing", self.spec)
                return False
        except OSError:
            return False
        problem = self.spec.maptype.structure_problem(self.spec.file)
        if problem is None:
            # A full dump reads every page: a damaged LMDB page kills postmap (SIGBUS), a
            # damaged Berkeley DB makes it complain on stderr.
            proc = self._run(["-s", str(self.spec)], "", check=False, stdout=False)
            if proc.returncode == 0 and not proc.stderr.strip():
                return True
            problem = _first_line(proc.stderr) or f"postmap -s exit {proc.returncode}"
        self.log.warning("action=relay-check map=%s result=unreadable error=%r", self.spec,
                         problem)
        return False

    def listing(self) -> set[str]:
        """The IPs the map holds now (empty when it is missing or unreadable, or in dry run)."""
        if self.dry_run or not os.path.isfile(self.spec.file):
            return set()
        proc = self._run(["-s", str(self.spec)], "", check=False)
        if proc.returncode != 0:
            return set()
        ips = (normalize_ip(line.split(None, 1)[0]) for line in proc.stdout.splitlines()
               if line.strip())
        return {ip for ip in ips if ip is not None}

    # -- internals ----------------------------------------------------------------------

    def _keys(self, ips: Iterable[str], action: str) -> list[str]:
        """Normalised, de-duplicated keys (IPv6 compressed, as Postfix looks them up)."""
        if isinstance(ips, str):
            raise TypeError("ips must be an iterable of addresses, not a single string")
        keys: dict[str, None] = {}
        for raw in ips:
            if not isinstance(raw, str):
                ip = None
            elif _CANONICAL_V4.fullmatch(raw):
                ip = raw   # fast path: rebuilds of 100,000 grants would spend most time parsing
            else:
                ip = normalize_ip(raw)
            if ip is None:
                # Never let something that is not an address reach postmap's input.
                self.log.error("action=relay-%s ip=%r map=%s result=skipped reason=invalid-ip",
                               action, raw, self.spec)
                continue
            keys[ip] = None
        return list(keys)

    def _run(self, args: list[str], stdin: str, check: bool = True,
             ok_codes: tuple[int, ...] = (0,),
             stdout: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = runner.run(self._postmap + args, stdin, timeout=_POSTMAP_TIMEOUT, check=False,
                              stdout=stdout)
        except runner.ToolError as exc:
            raise RelayMapError(f"relay map {self.spec}: cannot run postmap: "
                                f"{exc.__cause__ or exc}") from exc
        if check and (proc.returncode not in ok_codes or "fatal:" in proc.stderr):
            raise RelayMapError(f"relay map {self.spec}: postmap {' '.join(args)} failed "
                                f"(exit {proc.returncode}): {_first_line(proc.stderr)}")
        return proc

    def _update(self, args: list[str], body: str, ok_codes: tuple[int, ...] = (0,)) -> None:
        """Apply one in-place batch with postmap, then make the change visible to smtpd."""
        path = self.spec.file
        try:
            before = os.stat(path).st_mtime_ns // _NS
        except FileNotFoundError:
            # postmap -i would create an empty map silently; a missing map means a rebuild.
            raise RelayMapError(f"relay map {self.spec}: {path} is missing; rebuild needed") \
                from None
        # postmap fdatasync()s both types before it exits: durable when this returns.
        maptype = self.spec.maptype
        if not maptype.lock_insert or args[0] != "-i":
            # postmap locks by itself here: flock(LOCK_EX) for hash (readers take LOCK_SH),
            # an fcntl write lock per deleted key for lmdb. Taking ours too would deadlock.
            self._run(args + [str(self.spec)], body, ok_codes=ok_codes)
            if maptype.bump_mtime:
                self._bump_mtime(path, before)
            return
        # See lmdb.py: postmap -i takes no lock there; the fcntl write lock keeps readers out.
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            self._run(args + [str(self.spec)], body, ok_codes=ok_codes)
        finally:
            os.close(fd)   # releases the lock

    @staticmethod
    def _bump_mtime(path: str, before: int) -> None:
        """Move st_mtime to a whole second later than before the change.

        smtpd's dict_changed() compares whole-second mtimes, so an in-place change within
        the same second stays unseen and the stale Berkeley DB page cache keeps answering.
        Strictly increasing seconds (which may run ahead of the clock during bursts) make
        every change differ from any value a running smtpd recorded when it opened the map.
        """
        st = os.stat(path)
        if st.st_mtime_ns // _NS <= before:
            os.utime(path, ns=(st.st_atime_ns, (before + 1) * _NS))

    def _rebuild_file(self, keys: list[str]) -> None:
        def later_mtime(built: str) -> None:
            old_sec, new_sec = _mtime_sec(self.spec.file), _mtime_sec(built)
            if old_sec is not None and new_sec is not None and new_sec <= old_sec:
                # The rename alone is noticed (old file unlinked); a later mtime also keeps
                # the next in-place update's "strictly later second" rule simple.
                os.utime(built, ns=(round(self.clock() * _NS), (old_sec + 1) * _NS))

        try:
            rebuild_beside(self.spec, (f"{ip}\t{self.value}\n" for ip in keys),
                           lambda source: self._run([source], ""), later_mtime)
        except OSError as exc:
            raise RelayMapError(f"relay map {self.spec}: rebuild failed: {exc}") from exc

    def _known_grants(self) -> dict[str, None] | None:
        """The current grants for the text copy; read once from the map if not yet known."""
        if self.text_file is None:
            return None
        if self._grants is None:
            proc = self._run(["-s", str(self.spec)], "", check=False)
            grants: dict[str, None] = {}
            if proc.returncode == 0:
                for line in proc.stdout.splitlines():
                    ip = normalize_ip(line.split(None, 1)[0]) if line.strip() else None
                    if ip is not None:
                        grants[ip] = None
            else:
                self.log.warning("action=relay-text map=%s result=unreadable-map error=%r",
                                 self.spec, _first_line(proc.stderr))
            self._grants = grants
        return self._grants

    def _write_text(self) -> None:
        """Atomically replace the plain-text copy ("IP<TAB>value" per line)."""
        if self.text_file is None or self._grants is None:
            return
        directory = os.path.dirname(os.path.abspath(self.text_file))
        fd, tmp = tempfile.mkstemp(prefix=".logwatchd-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                # No fsync: this copy is informational and is rewritten by every rebuild at
                # start; ext4 and others flush a file renamed over another anyway.
                fh.write("".join(f"{ip}\t{self.value}\n" for ip in self._grants))
            os.chmod(tmp, 0o640)     # client IPs: not world-readable (Postfix never reads it)
            os.replace(tmp, self.text_file)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


class NotAMap(Exception):
    """Raised by a type's header reader: the file is not a map of that type."""


def header_problem(path: str, needed_size: Callable[[bytes, BinaryIO], int]) -> str | None:
    """Why the file cannot be a whole map, or None: needed_size(first 16 KiB, file) gives the
    size its header promises (NotAMap: not this type; struct.error: header cut short).

    Catches truncation that lookups alone can miss: Berkeley DB returns what is left of a
    page-aligned truncated hash file without complaint.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16384)
            size = os.fstat(fh.fileno()).st_size
            need = needed_size(head, fh)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    except NotAMap as exc:
        return str(exc)
    except struct.error:
        return f"truncated header ({size} bytes)"
    if size < need:
        return f"truncated: {size} bytes, the header says {need}"
    return None


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


def _mtime_sec(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns // _NS
    except FileNotFoundError:
        return None


def rebuild_beside(spec: MapSpec, lines: Iterable[str], postmap: Callable[[str], object],
                   before_rename: Callable[[str], None] | None = None) -> None:
    """Write `lines` to a source file in a private directory beside the map, postmap it
    (postmap("TYPE:source")) and rename the result over the map: readers see the old map or
    the new one, never a part. OSError when a step fails; the temporary files always go."""
    directory = os.path.dirname(spec.path)
    base = os.path.basename(spec.path)
    tmpdir = tempfile.mkdtemp(prefix=f".{base}.", dir=directory)
    try:
        src = os.path.join(tmpdir, base)
        with open(src, "w", encoding="ascii") as fh:
            fh.writelines(lines)
        postmap(f"{spec.type}:{src}")
        built = src + spec.maptype.suffix
        _copy_owner_mode(spec.file, built)
        with open(built, "rb") as fh:
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(built)
        os.replace(built, spec.file)
        _fsync_dir(directory)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _copy_owner_mode(old: str, new: str) -> None:
    """Give the rebuilt file the old file's owner and mode (or 0644 for a first build)."""
    try:
        st = os.stat(old)
    except FileNotFoundError:
        os.chmod(new, 0o644)
        return
    os.chmod(new, st.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(new, st.st_uid, st.st_gid)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_writable_dir(directory: str, what: str) -> None:
    """RelayMapError unless a file can really be created in `directory` (root ignores modes)."""
    if not os.path.isdir(directory):
        raise RelayMapError(f"{what}: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".logwatchd-probe-", dir=directory)
    except OSError as exc:
        raise RelayMapError(f"{what}: directory {directory} is not writable: "
                            f"{exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)


def open_relay_map(spec: str, value: str = "OK", text_file: str | None = None,
                   dry_run: bool = False, log: logging.Logger | None = None,
                   postfix_config_dir: str | None = None) -> RelayMap:
    """Open the relay map `spec` ("TYPE:/path", e.g. hash: or lmdb:); RelayMapError if unusable.

    postfix_config_dir: the directory with the main.cf postmap must read (default: postmap's
    own default, /etc/postfix or $MAIL_CONFIG).
    """
    log = log or logging.getLogger("logwatchd.relaymap")
    parsed = parse_spec(spec)
    value = _check_value(value)
    if not dry_run:
        _check_writable_dir(os.path.dirname(parsed.path), f"relay map {parsed}")
        if os.path.exists(parsed.file) and not os.access(parsed.file, os.W_OK):
            raise RelayMapError(f"relay map {parsed}: {parsed.file} is not writable")
        if text_file is not None:
            _check_writable_dir(os.path.dirname(os.path.abspath(text_file)),
                                f"relay text file {text_file}")
        if shutil.which("postmap") is None:
            raise RelayMapError(f"relay map {parsed}: postmap not found "
                                f"(install {parsed.maptype.package})")
        cfdir = postfix_config_dir or os.environ.get("MAIL_CONFIG") or "/etc/postfix"
        if not os.path.isfile(os.path.join(cfdir, "main.cf")):
            raise RelayMapError(f"relay map {parsed}: {cfdir}/main.cf is missing; "
                                "postmap cannot run without it")
    return RelayMap(parsed, value, text_file, dry_run, log, postfix_config_dir)


# The built-in types, in the order config errors and --help list them.
from logwatch.effectors.relaymap import hash as _hash  # noqa: E402
from logwatch.effectors.relaymap import lmdb as _lmdb  # noqa: E402

MAP_TYPES.register(_hash.MAP_TYPE.name, _hash.MAP_TYPE)
MAP_TYPES.register(_lmdb.MAP_TYPE.name, _lmdb.MAP_TYPE)
