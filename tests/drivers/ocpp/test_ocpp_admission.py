"""Admission (issue 17): identities, passwords by any spelling, the binary key, failed logins.

Real WebSocket handshakes on loopback against the running driver.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from drivers.ocpp.transport import LoginThrottle
from tests.drivers.ocpp.support import running_driver

PASSWORD = "correct-horse-1"
# A 20-byte AuthorizationKey (OCPP-J 1.6 Security Whitepaper: 20 bytes, configured as 40 hex
# digits) chosen to be invalid UTF-8 (0xff, 0xfe, a lone continuation byte) and to hold a ':'.
BINARY_KEY = bytes.fromhex("ff3a00fe80c1112233445566778899aabbccddee")


def _basic(user: bytes, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user + b":" + password).decode()}


async def _status(url: str, **kwargs: Any) -> int:
    """101 if the handshake succeeded, else the HTTP status the gateway refused it with."""
    try:
        async with websockets.connect(url, subprotocols=["ocpp1.6"], **kwargs) as cp:
            await cp.send('[2, "h", "Heartbeat", {}]')
            assert json.loads(await cp.recv())[:2] == [3, "h"]
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_a_protected_id_cannot_connect_without_its_password_by_any_spelling(tmp_path: Path) -> None:
    settings = {"passwords": {"CPA-0001": PASSWORD}, "allowed_ids": ["CP.*", "cp.*", ".*"],
                "max_login_failures": 0}
    async with running_driver(tmp_path, **settings) as gw:
        base = gw.url
        # look-alikes are not identifierStrings: refused before any password question
        for path in ("CPA-0001%20", "CPA%E2%80%900001", "CPA-0001%00", "CPA-0001%0A", "CPA-0001%2F"):
            assert await _status(base + path) == 404, path
        # spellings of the same identity (percent-encoding, case) need the password
        for path in ("CPA-0001", "CPA%2D0001", "cpa-0001", "Cpa-0001", "%43PA-0001"):
            assert await _status(base + path) == 401, path
            assert await _status(base + path, additional_headers=_basic(b"CPA-0001", PASSWORD.encode())) == 101, path
        # another identity matched by a pattern connects as itself, never as CPA-0001
        assert await _status(base + "CPA-0001x") == 101
        assert await _status(base + "CPA-0001", additional_headers=_basic(b"CPA-0001", b"correct-horse-2")) == 401
    assert set(gw.driver._mirrors) == {"CPA-0001", "CPA-0001x"}  # noqa: SLF001 - the device ids
    assert gw.ctx.counters["refused_bad_password"] == 6
    assert gw.ctx.counters["refused_bad_path"] == 5


async def test_binary_authorization_key_works_with_basic_auth(tmp_path: Path) -> None:
    settings = {"authorization_keys": {"CP-BIN": BINARY_KEY.hex()}, "allowed_ids": ["OPEN-.*"]}
    async with running_driver(tmp_path, **settings) as gw:
        assert await _status(gw.url + "CP-BIN", additional_headers=_basic(b"CP-BIN", BINARY_KEY)) == 101
        assert await _status(gw.url + "CP-BIN", additional_headers=_basic(b"CP-BIN", BINARY_KEY[:-1])) == 401
        assert await _status(gw.url + "CP-BIN", additional_headers=_basic(b"CP-BIN", BINARY_KEY.hex().encode())) == 401
        assert await _status(gw.url + "CP-BIN") == 401
    assert gw.ctx.counters["refused_bad_password"] == 3


async def test_failed_logins_are_rate_limited_per_source(tmp_path: Path) -> None:
    settings = {"passwords": {"CPA-0001": PASSWORD}, "max_login_failures": 5, "login_failure_window": 600}
    async with running_driver(tmp_path, **settings) as gw:
        wrong = _basic(b"CPA-0001", b"wrong-password")
        statuses = [await _status(gw.url + "CPA-0001", additional_headers=wrong) for _ in range(8)]
        # blocked now, even with the right password, until the window ends
        right = await _status(gw.url + "CPA-0001", additional_headers=_basic(b"CPA-0001", PASSWORD.encode()))
    assert statuses == [401] * 5 + [429] * 3
    assert right == 429
    assert gw.ctx.counters["refused_bad_password"] == 5
    assert gw.ctx.counters["refused_login_rate"] == 4


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, message: str, **fields: Any) -> None:
        self.lines.append((message, fields))


def test_login_throttle_logs_once_per_source_and_forgets_after_the_window() -> None:
    now = [0.0]
    log = _Log()
    throttle = LoginThrottle(max_failures=3, window=60.0, log=log, count=lambda c: None, clock=lambda: now[0],
                             max_sources=2)
    for _ in range(300):
        if not throttle.blocked("10.0.0.1"):
            throttle.failed("10.0.0.1", "CPA-0001")
    assert throttle.blocked("10.0.0.1")
    assert [m for m, _ in log.lines] == [
        "login_failed",
        "login_source_blocked",
    ]
    assert log.lines[1][1]["failures"] == 3
    now[0] = 61.0
    assert not throttle.blocked("10.0.0.1")  # the window ended
    throttle.failed("10.0.0.2", "CPA-0001")
    throttle.failed("10.0.0.3", "CPA-0001")
    throttle.failed("10.0.0.4", "CPA-0001")
    assert len(throttle.sources) == 2  # bounded


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"passwords": {"CPA:1": PASSWORD}}, "passwords: expected charge point ids of 1-48 identifier characters"),
        ({"passwords": {"CPA-1": PASSWORD}, "authorization_keys": {"cpa-1": BINARY_KEY.hex()}},
         "expected each charge point id once"),
        ({"authorization_keys": {"CPA-1": "xyz"}}, "authorization_keys"),
    ],
)
def test_admission_config_problems(settings: dict[str, Any], problem: str) -> None:
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_config({"gateway": {"id": "gw1"}, "drivers": [{"type": "ocpp", **settings}]})
    assert any(problem in p for p in error.value.problems), error.value.problems
