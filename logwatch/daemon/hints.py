"""Hints added to start-up errors that are really "not run as root" or "not writable"."""

from __future__ import annotations

import os
import pwd


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def access_hint(directory: str, key: str) -> str:
    """Why `directory` may be unusable, for an error message ("" when nothing to add)."""
    if os.geteuid() != 0:
        return (f"; logwatchd runs as {_user()}, not root: it needs write access to "
                f"{directory} (and root for the firewall and the relay map): start it as "
                f"root, or set {key} to a directory this user may write")
    if os.path.isdir(directory) and not os.access(directory, os.W_OK):
        return f"; {directory} is not writable (a read-only file system?): set {key}"
    return ""
