"""Optional packages and tools a test needs: skip where they are missing, fail in CI.

A developer's machine may lack hyperscan, Postfix or nft, and those tests skip there. In CI
(CI=true) and under `make test` (LOGWATCHD_STRICT=1) every one of them is installed by
`make check`, so a missing one is a broken set-up and fails the test instead of hiding it.

    require("postfix", "ip")                  # in a test or fixture
    @pytest.mark.needs("root", "nft")         # on a test, a class or a module (pytestmark)

A name is satisfied by a command on PATH (plus the sbin directories), an importable Python
module, or, for "root", running as root.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

_TRUE = {"1", "true", "yes", "on"}
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What installs a name, for the message; names not listed come from the Makefile's apt lists.
HINTS = {
    "root": "run the tests as root (make check does)",
    "hyperscan": "pip install hyperscan (make venv installs it into .venv)",
    "inotify_simple": "pip install inotify_simple (make venv installs it into .venv)",
    "ip": "apt-get install iproute2",
    "postmap": "apt-get install postfix",
    "postconf": "apt-get install postfix",
    "journalctl": "apt-get install systemd",
    "dpkg-buildpackage": "apt-get install dpkg-dev",
    "dh": "apt-get install debhelper dh-python",
    "groff": "apt-get install groff-base",
    "unshare": "apt-get install util-linux",
    "runuser": "apt-get install util-linux",
    "psycopg": "apt-get install python3-psycopg",
}


def strict() -> bool:
    """True in CI and under `make test`: missing requirements fail instead of skipping."""
    env = os.environ
    return (env.get("CI", "").strip().lower() in _TRUE
            or env.get("LOGWATCHD_STRICT", "").strip().lower() in _TRUE
            # The older, hyperscan-only switch means the same.
            or env.get("LOGWATCHD_REQUIRE_HYPERSCAN", "").strip() == "1")


def available(name: str) -> bool:
    """A command of that name, an importable module of that name, or root for "root"."""
    if name == "root":
        return os.geteuid() == 0
    path = os.environ.get("PATH", "") + ":" + SBIN
    if shutil.which(name, path=path) is not None:
        return True
    try:
        return name.isidentifier() and importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(*names: str) -> list[str]:
    return [n for n in names if not available(n)]


def unavailable(message: str) -> None:
    """Skip the test, or fail it in strict mode (CI, make test)."""
    if strict():
        pytest.fail(f"{message} [CI=true/LOGWATCHD_STRICT=1: a missing requirement fails]",
                    pytrace=False)
    pytest.skip(message)


def require(*names: str) -> None:
    """Skip (or fail, in strict mode) unless every named package, tool or "root" is there."""
    gaps = missing(*names)
    if gaps:
        hints = "; ".join(f"{n}: {HINTS.get(n, 'see APT_RUN/APT_TEST in the Makefile')}"
                          for n in gaps)
        unavailable(f"needs {', '.join(gaps)} ({hints})")
