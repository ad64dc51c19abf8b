"""The firewall registry: a new backend is one class and one registration line, and gets the
config validation, the --firewall choice and `logwatchctl check-config` from it for free."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from logwatch.cli import ctl
from logwatch.daemon import app
from logwatch.daemon.config import Config, ConfigError, FirewallConfig, load_config
from logwatch.effectors.firewall import (
    FIREWALLS,
    Firewall,
    FirewallBackend,
    FirewallError,
    firewall_identity,
    make_firewall,
    validate,
)
from logwatch.engine.model import Ban


class DummyFirewall(Firewall):
    """Holds its bans in memory."""

    backend = "dummy"

    def setup(self) -> None:
        self.held: set[str] = set()

    def ban(self, bans: Sequence[Ban]) -> None:
        self.held |= set(self._live(bans, self.clock()))


def _dummy_chain(v: object) -> str | None:
    return None if isinstance(v, str) and v.startswith("DUMMY") else "must start with DUMMY"


@pytest.fixture
def dummy() -> Iterator[None]:
    FIREWALLS.register("dummy", FirewallBackend("dummy", DummyFirewall,
                                                keys={"chain": _dummy_chain}))
    try:
        yield
    finally:
        del FIREWALLS._entries["dummy"]     # the registry has no removal: tests only


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "logwatchd.yaml"
    path.write_text("bans:\n  whitelist: null\n" + text)
    return str(path)


def test_an_unregistered_backend_is_refused_everywhere(tmp_path: Path) -> None:
    path = write(tmp_path, "firewall:\n  backend: dummy\n  chain: DUMMY_X\n")
    with pytest.raises(ConfigError, match=r"logwatchd.yaml:4: firewall.backend: .*none"):
        load_config(path)
    with pytest.raises(SystemExit):
        app.build_parser().parse_args(["--firewall", "dummy"])
    assert ctl.main(["check-config", path]) != 0


def test_a_registered_backend_gets_validation_cli_and_check_config(dummy: None,
                                                                   tmp_path: Path) -> None:
    bad = write(tmp_path, "firewall:\n  backend: dummy\n  chain: OTHER\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert [str(p) for p in exc.value.problems] == [
        f"{bad}:5: firewall.chain: must start with DUMMY"]
    assert ctl.main(["check-config", bad]) != 0
    good = write(tmp_path, "firewall:\n  backend: dummy\n  chain: DUMMY_X\n")
    assert load_config(good).firewall.backend == "dummy"
    assert ctl.main(["check-config", good]) == 0
    assert app.build_parser().parse_args(["--firewall", "dummy"]).firewall == "dummy"
    cfg = Config(firewall=FirewallConfig(backend="dummy", chain="DUMMY_X"))
    fw = make_firewall(cfg.firewall, clock=lambda: 1000.0)
    assert isinstance(fw, DummyFirewall)
    fw.setup()
    fw.ban([Ban("192.0.2.7", 900.0, 1100.0), Ban("192.0.2.8", 900.0, 999.0)])
    assert fw.held == {"192.0.2.7/32"}
    assert firewall_identity(cfg, dry_run=False)[0] == "dummy"
    with pytest.raises(FirewallError, match="firewall.chain"):
        make_firewall(FirewallConfig(backend="dummy", chain="OTHER"))


def test_config_and_firewall_share_one_validation(tmp_path: Path) -> None:
    """An nftables table name the firewall refuses is refused by the config loader too."""
    path = write(tmp_path, "firewall:\n  backend: nftables\n  nft_table: log-watch\n")
    with pytest.raises(ConfigError, match=r":5: firewall.nft_table: "):
        load_config(path)
    assert validate(FirewallConfig(nft_table="log-watch"))[0][0] == "nft_table"
    path = write(tmp_path, "firewall:\n  ipset_v4: same\n  ipset_v6: same\n")
    with pytest.raises(ConfigError, match=r":5: firewall.ipset_v6: .*differ"):
        load_config(path)
