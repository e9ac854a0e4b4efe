"""Device health bookkeeping and the backoff, without any clock or port."""

from __future__ import annotations

from drivers.serial.health import Backoff, DeviceHealth
from gateway.model import Severity


def test_backoff_doubles_to_its_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


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
