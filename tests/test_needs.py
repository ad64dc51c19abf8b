"""The `needs` mechanism: a missing optional package or tool skips, and fails in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from needs import available, require, strict

TESTS = Path(__file__).resolve().parent
ABSENT = "lwd-no-such-tool-4711"
STRICT_VARS = ("CI", "LOGWATCHD_STRICT", "LOGWATCHD_REQUIRE_HYPERSCAN")


@pytest.fixture
def relaxed(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in STRICT_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_names_are_commands_modules_or_root() -> None:
    assert available("sh")                 # a command
    assert available("json")               # a module
    assert available("root") == (os.geteuid() == 0)
    assert not available(ABSENT)
    assert not available("os.path.nope")


@pytest.mark.parametrize(("var", "value"), [("CI", "true"), ("LOGWATCHD_STRICT", "1"),
                                            ("LOGWATCHD_REQUIRE_HYPERSCAN", "1")])
def test_strict_mode_fails_instead_of_skipping(relaxed: pytest.MonkeyPatch, var: str,
                                               value: str) -> None:
    relaxed.setenv(var, value)
    assert strict()
    with pytest.raises(pytest.fail.Exception, match=ABSENT):
        require("sh", ABSENT)


def test_relaxed_mode_skips(relaxed: pytest.MonkeyPatch) -> None:
    relaxed.setenv("CI", "false")
    assert not strict()
    with pytest.raises(pytest.skip.Exception, match=ABSENT):
        require(ABSENT)
    require("sh", "json")                  # all there: no exception


def test_marker_fails_under_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    """The conftest hook applies `needs` marks (module-level pytestmark included)."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n"
        f"pytestmark = pytest.mark.needs({ABSENT!r})\n"
        "def test_one():\n    pass\n"
        "@pytest.mark.needs('sh')\n"
        "def test_present():\n    pass\n")
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())

    def run(**extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in STRICT_VARS}
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p",
                               "no:cacheprovider", str(sample)], cwd=tmp_path,
                              env=env | extra, capture_output=True, text=True, timeout=120)
        return proc.stdout + proc.stderr

    relaxed_out = run()
    assert "2 skipped" in relaxed_out, relaxed_out
    strict_out = run(CI="true")
    assert "2 errors" in strict_out and ABSENT in strict_out, strict_out
    assert "passed" not in strict_out, strict_out
