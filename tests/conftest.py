"""Test-suite wide hooks and fixtures: the `needs` marker (tests/needs.py), the .deb, the one
fake clock (FakeClock, and the `clock` fixture)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from needs import require
from pkgroot import build_deb

import logwatch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*names): packages, tools or 'root' the test needs; missing ones skip "
        "it, or fail it with CI=true or LOGWATCHD_STRICT=1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="needs"):
        require(*mark.args)


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The .deb, built once per session from a copy of the work tree (which stays untouched)."""
    require("dpkg-buildpackage", "dh")
    top = tmp_path_factory.mktemp("debbuild")
    yield build_deb(top, logwatch.__version__)
    shutil.rmtree(top, ignore_errors=True)


@dataclass
class FakeClock:
    """A settable clock to inject wherever the code takes a logwatch.clock.Clock."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative step); returns the new time."""
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock at 1,000,000 (1970-01-12): far from any real date a test might meet."""
    return FakeClock()
