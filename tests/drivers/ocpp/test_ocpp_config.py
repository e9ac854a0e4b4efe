"""Config keys: defaults, constraints and cross-field problems, through the gateway's loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError


def _config(**driver: object) -> dict:
    return {"gateway": {"id": "gw1"}, "drivers": [{"type": "ocpp", **driver}]}


def test_sample_from_readme_parses(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    config = parse_config(_config(
        name="charge-points", port=9000, path_prefix="/ocpp/", tls_cert=str(cert), tls_key=str(key),
        allowed_ids=["CITY-[0-9]{4}"], heartbeat_interval=300, poll_interval=900,
        upstream_url="wss://csms.operator.example/ocpp/", upstream_backoff_max=120,
        passwords={"CITY-0001": "a-long-random-secret-1"},
    ))
    (driver,) = config.drivers
    assert driver.name == "charge-points" and driver.protocols == ["ocpp2.0.1", "ocpp1.6"]
    assert driver.passwords == {"CITY-0001": "a-long-random-secret-1"}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"allowed_ids": ["CP.*"], "tls_cert": "/nonexistent.pem"}, "tls_key: expected tls_cert and tls_key together"),
        ({"allowed_ids": ["CP.*"], "tls_cert": "/nope.pem", "tls_key": "/nope.key"}, "tls_cert: expected a readable file"),
        ({"allowed_ids": ["CP[.*"]}, "allowed_ids[0]: expected a regular expression"),
        ({}, "allowed_ids: expected at least one pattern or one entry in passwords"),
        ({"allowed_ids": ["CP.*"], "require_password": True}, "require_password: expected passwords"),
        ({"allowed_ids": ["CP.*"], "upstream_url": "http://csms/"}, "upstream_url: expected ws:// or wss://"),
        ({"allowed_ids": ["CP.*"], "upstream_url": "ws://csms/ocpp"}, "upstream_url: expected ws:// or wss://"),
        ({"allowed_ids": ["CP.*"], "upstream_url": "ws://csms/", "upstream_ca_file": "/etc/hosts"},
         "upstream_ca_file: expected only with a wss://"),
        ({"allowed_ids": ["CP.*"], "upstream_backoff_initial": 10.0, "upstream_backoff_max": 5.0},
         "upstream_backoff_max: expected >= upstream_backoff_initial"),
        ({"allowed_ids": ["CP.*"], "protocols": ["ocpp1.6", "ocpp1.6"]}, "protocols: expected each protocol once"),
        ({"allowed_ids": ["CP.*"], "poll_interval": 0.5}, "poll_interval: expected 0 (off) or >= 1"),
        ({"passwords": {"bad id with spaces": "long-enough-pw"}}, "passwords: expected charge point ids"),
        ({"allowed_ids": ["CP.*"], "port": 70000}, "drivers[0].port: expected a whole number >= 0 and <= 65535, found 70000"),
        ({"allowed_ids": ["CP.*"], "protocols": ["ocpp1.5"]}, "drivers[0].protocols[0]: expected one of"),
        ({"allowed_ids": ["CP.*"], "passwords": {"CP1": "short"}}, "expected text of 8 to 40 characters, found a value of 5 characters (hidden)"),
        ({"allowed_ids": ["CP.*"], "path_prefix": "ocpp"}, "drivers[0].path_prefix: expected a URL path starting and ending with '/'"),
        ({"allowed_ids": ["CP.*"], "heartbeat_interval": 0}, "drivers[0].heartbeat_interval: expected a whole number >= 1 and <= 86400"),
        ({"allowed_ids": ["CP.*"], "listen": "0.0.0.0"}, "drivers[0].listen: unknown key"),
    ],
)
def test_invalid_settings_are_named(settings: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(_config(**settings))
    assert any(problem in p for p in error.value.problems), error.value.problems
