"""web.listen / --web-listen and web.token: checked like every key, the token never echoed."""

from __future__ import annotations

import pytest

from logwatch.daemon.config import Config, ConfigError, apply_overrides, parse_config
from logwatch.daemon.main import build_parser
from logwatch.services import SERVICES
from logwatch.util.checks import parse_listen


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9189") == ("127.0.0.1", 9189)
    assert parse_listen("[::1]:9189") == ("::1", 9189)
    assert parse_listen("localhost:80") == ("localhost", 80)
    for bad in ("9189", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "example.org:80",
                "::1:9189", "127.0.0.1:http", ":9189"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_web_is_off_by_default_and_a_service_when_listening() -> None:
    cfg = Config()
    assert cfg.web.listen is None and cfg.web.token is None
    web = SERVICES.get("web")
    assert not web.enabled(cfg)
    cfg = parse_config("web:\n  listen: 127.0.0.1:9189\n  token: 0123456789abcdef0123\n")
    assert web.enabled(cfg) and web.address(cfg) == "127.0.0.1:9189"


def test_bad_values_name_file_line_and_key_and_hide_the_token() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("web:\n  listen: mail.example.org:9189\n  token: short\n", "/etc/l.yaml")
    assert [f"{p.file}:{p.line}: {p.key}" for p in info.value.problems] == [
        "/etc/l.yaml:2: web.listen", "/etc/l.yaml:3: web.token"]
    secret = 1234567890123456789
    with pytest.raises(ConfigError) as info:
        parse_config(f"web:\n  token: {secret}\n")
    assert str(secret) not in str(info.value) and "(hidden)" in str(info.value)


def test_the_flag_overrides_the_file_and_off_turns_it_off() -> None:
    cfg = parse_config("web:\n  listen: 127.0.0.1:9189\n")
    args = build_parser().parse_args(["--web-listen", "[::1]:9200"])
    assert apply_overrides(cfg, args).web.listen == "[::1]:9200"
    args = build_parser().parse_args(["--web-listen", "off"])
    assert apply_overrides(cfg, args).web.listen is None
    with pytest.raises(ConfigError, match=r"--web-listen \(web.listen\)"):
        apply_overrides(Config(), build_parser().parse_args(["--web-listen", "nowhere"]))
