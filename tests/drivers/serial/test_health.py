"""Device health bookkeeping and the backoff, without any clock or port."""

from __future__ import annotations

from pathlib import Path

from drivers.serial.driver import SerialDriver
from drivers.serial.health import DeviceHealth
from gateway.backoff import Backoff
from gateway.model import Severity
from tests.drivers.serial.conftest import Harness, make_config


def test_port_reopen_uses_the_gateway_backoff(tmp_path: Path) -> None:
    config = make_config(
        port="/dev/null", protocol="wxt", reopen_backoff_initial=0.5, reopen_backoff_max=3.0
    )
    driver = SerialDriver(config, Harness(tmp_path).ctx)
    assert isinstance(driver.backoff, Backoff)
    assert (driver.backoff.initial, driver.backoff.maximum) == (0.5, 3.0)
    delays = [driver.backoff.next_delay() for _ in range(5)]
    for delay, ceiling in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    driver.session.on_open()  # the port is back: the next loss starts from the initial delay
    assert driver.backoff.ceiling() == 0.5


def test_offline_after_n_misses_then_back() -> None:
    health = DeviceHealth("serial:ttyUSB0/3", offline_after=3, backoff_initial=5, backoff_max=20)
    assert health.miss(1.0, "no_response") is None
    assert health.miss(2.0, "no_response") is None
    offline = health.miss(3.0, "no_response")
    assert offline is not None and offline.value == "offline"
    assert offline.severity == Severity.WARNING and offline.detail["misses"] == "3"
    assert health.miss(4.0, "no_response") is None  # one event per transition
    assert [health.probe_delay() for _ in range(4)] == [5, 10, 20, 20]
    back = health.success(5.0)
    assert back is not None and back.value == "ok" and back.severity == Severity.INFO
    assert health.success(6.0) is None
    assert health.probe_delay() == 5  # backoff reset by the answer


def test_a_success_resets_the_miss_count() -> None:
    health = DeviceHealth("d", offline_after=2, backoff_initial=1, backoff_max=1)
    assert health.miss(1.0, "x") is None
    assert health.success(2.0) is None
    assert health.miss(3.0, "x") is None  # not the second consecutive miss


def test_port_lost_marks_offline_once() -> None:
    health = DeviceHealth("d", offline_after=5, backoff_initial=1, backoff_max=1)
    event = health.port_lost(1.0, "read failed")
    assert event is not None and event.detail == {"reason": "read failed"}
    assert health.port_lost(2.0, "read failed") is None
    assert not health.online
