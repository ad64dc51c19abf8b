"""Test-suite wide hooks and fixtures: the `needs` marker (tests/needs.py), the .deb."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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
