"""Run a test with the tailer on inotify and again on the polling fallback.

Import `tail_mode` into a test module (autouse there) or name it as a test's argument: the
tailer honours LOGWATCHD_POLLING, in-process and in a daemon started by daemon_harness.
"""

from __future__ import annotations

import os

import pytest

from logwatch.sources.tail import POLLING_ENV

POLL_INTERVAL = 0.2      # daemon_harness's poll interval under polling, to keep tests short


@pytest.fixture(params=["inotify", "polling"])
def tail_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polling":
        monkeypatch.setenv(POLLING_ENV, "1")
    else:
        monkeypatch.delenv(POLLING_ENV, raising=False)
    return request.param


def polling_forced() -> bool:
    return os.environ.get(POLLING_ENV, "") not in ("", "0")
