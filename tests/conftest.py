"""Test-suite wide hooks: the `needs` marker (see tests/needs.py)."""

from __future__ import annotations

import pytest
from needs import require


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*names): packages, tools or 'root' the test needs; missing ones skip "
        "it, or fail it with CI=true or LOGWATCHD_STRICT=1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="needs"):
        require(*mark.args)
