"""Modbus RTU end to end: a pymodbus RTU slave bus on a pty pair -> driver -> windows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simulators.serial import Faults, ModbusBusSim, SimUnit, xy_md02
from tests.drivers.serial.conftest import Harness, make_config, running
from tests.support.wait import async_wait_for

# slow: end to end on ptys with a pymodbus slave (make test-fast leaves it out)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def bus_config(path: str, units: list[int], interval: float = 0.1, **modbus: object) -> object:
    settings = {
        "timeout": 0.15,
        "retries": 1,
        "offline_after": 2,
        "offline_backoff_initial": 0.3,
        "offline_backoff_max": 0.6,
        **modbus,
    }
    settings.setdefault(
        "devices", [{"unit": u, "interval": interval, "map": "xy_md02"} for u in units]
    )
    return make_config(port=path, protocol="modbus", modbus=settings)


async def test_two_xy_md02_units_into_windows(tmp_path: Path, harness: Harness) -> None:
    sim = ModbusBusSim([xy_md02(1), xy_md02(2)], link=tmp_path / "ttyRS485")
    await sim.start()
    try:
        async with running(bus_config(sim.path, [1, 2]), harness):
            await async_wait_for(
                lambda: all(
                    len(harness.of(f"serial:ttyRS485/{u}", "temperature")) >= 5 for u in (1, 2)
                ),
                timeout=15,
                what="5 polls of each unit",
            )
    finally:
        await sim.stop()
    for unit in (1, 2):
        device = f"serial:ttyRS485/{unit}"
        temperatures = [r.value for r in harness.of(device, "temperature")]
        humidities = [r.value for r in harness.of(device, "humidity")]
        # the simulator's model: 21 +- 3 degC, 40..60 %RH, in 0.1 steps; values change
        assert all(17.9 <= t <= 24.1 for t in temperatures)
        assert all(39.9 <= h <= 60.1 for h in humidities)
        assert len(set(humidities)) > 1
        assert harness.statuses(device) == []  # never offline
    assert harness.ctx.decode_errors == {}
    windows = harness.windows()
    records = {(r.device, r.metric): r for r in windows}
    temperature = records[("serial:ttyRS485/1", "temperature")]
    assert temperature.unit == "Cel" and temperature.kind == "gauge"
    counted = sum(
        r.count for r in windows if (r.device, r.metric) == ("serial:ttyRS485/1", "temperature")
    )
    assert counted == len(harness.of("serial:ttyRS485/1", "temperature"))
    assert temperature.min is not None and temperature.max is not None
    assert 17.9 <= temperature.min <= temperature.max <= 24.1
    status = records[("serial:ttyRS485/2", "sensor_status")]
    assert status.kind == "state" and status.last == "ok"


async def test_custom_register_map_types_and_orders(tmp_path: Path, harness: Harness) -> None:
    unit = SimUnit(
        unit=9,
        model="static",
        registers={
            10: 0x0000, 11: 0x4148,  # float32 12.5, little word order
            12: 0x0001, 13: 0x86A0,  # uint32 100000, big word order
            14: 0xFF9C,  # int16 -100
            15: 1234,  # a register outside the catalog, mapped by the user
        },
    )
    sim = ModbusBusSim([unit], link=tmp_path / "ttyBUS")
    await sim.start()
    registers = [
        {"metric": "temperature", "function": 3, "address": 10, "type": "float32",
         "word_order": "little"},
        {"metric": "pressure", "function": 3, "address": 12, "type": "uint32"},
        {"metric": "co2", "function": 3, "address": 14, "type": "int16", "scale": -1.0,
         "offset": 300.0},
        {"metric": "x_flow_rate", "function": 3, "address": 15, "scale": 0.01},
    ]
    config = bus_config(sim.path, [], devices=[{"unit": 9, "interval": 0.1, "registers": registers}])
    try:
        async with running(config, harness):
            await async_wait_for(lambda: harness.of("serial:ttyBUS/9", "co2"), timeout=10)
    finally:
        await sim.stop()
    latest = {r.metric: r.value for r in harness.readings if r.device == "serial:ttyBUS/9"}
    assert latest["temperature"] == 12.5
    assert latest["pressure"] == 100000.0
    assert latest["co2"] == 400.0
    # forwarded outside the catalog, counted, and windowed with its registered unit (none known)
    assert latest["x_flow_rate"] == 12.34
    # how many polls ran before the stop is the clock's; the counter must match them exactly
    forwarded = len(harness.of("serial:ttyBUS/9", "x_flow_rate"))
    assert forwarded >= 1 and harness.ctx.counters["unknown_metric_forwarded"] == forwarded
    records = [r for r in harness.windows() if r.metric == "x_flow_rate"]
    assert sum(r.count for r in records) == forwarded
    assert {(r.unit, r.kind) for r in records} == {("", "gauge")}


async def test_silent_unit_goes_offline_without_delaying_the_others(
    tmp_path: Path, harness: Harness
) -> None:
    silent = xy_md02(2)
    silent.faults.silent = True
    sim = ModbusBusSim([xy_md02(1), silent, xy_md02(3)], link=tmp_path / "ttyRS485")
    await sim.start()
    loop = asyncio.get_running_loop()
    try:
        async with running(bus_config(sim.path, [1, 2, 3], interval=0.2), harness):
            await async_wait_for(
                lambda: harness.statuses("serial:ttyRS485/2") == ["offline"], timeout=10
            )
            offline = [e for e in harness.events if e.device == "serial:ttyRS485/2"][0]
            assert offline.detail["reason"] == "no_response"
            # Once unit 2 is offline, units 1 and 3 keep their 0.2 s interval: time ten polls of
            # unit 1 (probes of unit 2 cost one 0.15 s timeout every 0.6 s at most).
            before = len(harness.of("serial:ttyRS485/1", "temperature"))
            start = loop.time()
            await async_wait_for(lambda: len(harness.of("serial:ttyRS485/1", "temperature")) - before >= 10,
                                 timeout=20, what="ten more polls of unit 1")
            polls = len(harness.of("serial:ttyRS485/1", "temperature")) - before
            # >= 60 % of the ideal rate (a loaded CI machine); a unit holding the bus with
            # retries on every poll would bring unit 1 down to about a third
            assert polls >= 0.6 * (loop.time() - start) / 0.2, polls
            assert [r.value for r in harness.of("serial:ttyRS485/2", "sensor_status")][-1] == "offline"
            # The device comes back: probed with backoff, marked ok again.
            silent.faults.silent = False
            await async_wait_for(
                lambda: harness.statuses("serial:ttyRS485/2") == ["offline", "ok"], timeout=10
            )
            await async_wait_for(lambda: harness.of("serial:ttyRS485/2", "temperature"), timeout=5)
    finally:
        await sim.stop()
    assert harness.ctx.counters["devices_offline"] == 1
    assert harness.log.count("warning", "device_offline") == 1  # logged once, not per miss
    assert harness.statuses("serial:ttyRS485/1") == []
    records = {(r.device, r.metric): r for r in harness.windows()}
    status = records[("serial:ttyRS485/2", "sensor_status")]
    assert status.kind == "state" and "offline" in (status.durations or {})


async def test_bad_crc_and_garbage_are_counted_and_retried(tmp_path: Path, harness: Harness) -> None:
    noisy = xy_md02(1)
    noisy.faults = Faults(corrupt=0.3, garbage=0.3, seed=7)
    sim = ModbusBusSim([noisy], link=tmp_path / "ttyNOISY")
    await sim.start()
    try:
        async with running(bus_config(sim.path, [1], retries=3, offline_after=5), harness):
            await async_wait_for(
                lambda: len(harness.of("serial:ttyNOISY/1", "temperature")) >= 15
                and harness.ctx.decode_errors.get("crc_mismatch", 0) >= 1,
                timeout=20,
            )
    finally:
        await sim.stop()
    # lower bounds: pymodbus finds some answers behind garbage by itself and a failed exchange
    # is classified from the bytes it left (crc_mismatch or garbage by a heuristic), so the
    # simulator's fault counts have no one-to-one counter on the gateway's side
    assert noisy.faults.corrupted >= 1 and noisy.faults.garbled >= 1
    # no damaged value slipped through: every value is inside the simulator's model
    assert all(17.9 <= r.value <= 24.1 for r in harness.of("serial:ttyNOISY/1", "temperature"))
    assert harness.ctx.counters.get("timeouts", 0) >= noisy.faults.corrupted // 2


async def test_exception_response_is_typed_and_counted(tmp_path: Path, harness: Harness) -> None:
    sim = ModbusBusSim([xy_md02(4)], link=tmp_path / "ttyEXC")
    await sim.start()
    # register 500 is outside the simulated block: the slave answers exception 2
    registers = [{"metric": "co2", "function": 3, "address": 500, "type": "uint16"}]
    config = bus_config(sim.path, [], devices=[{"unit": 4, "interval": 0.1, "registers": registers}])
    try:
        async with running(config, harness):
            await async_wait_for(
                lambda: harness.ctx.decode_errors.get("modbus_exception_illegal_data_address", 0)
                >= 2,
                timeout=10,
            )
    finally:
        await sim.stop()
    assert [r.value for r in harness.of("serial:ttyEXC/4", "sensor_status")][0] == "error"
    assert harness.statuses("serial:ttyEXC/4") == []  # alive: never offline


async def test_a_late_answer_is_never_read_as_the_next_blocks(tmp_path: Path, harness: Harness) -> None:
    """RTU answers carry no transaction id. The unit's first three answers are slow (timeout 1 s):
    the first comes 0.2 s after its timeout, while the retry is out; the retry's answer 0.3 s
    after the retry; the first humidity answer 0.5 s after its timeout. Without a quiet bus after
    a miss, the retry took the first answer and the request for the unit's second block (same
    function, same length) took the retry's, decoding the temperature's registers as the
    humidity. The margins (0.5 s or more) keep the exact counts true on a busy machine."""
    unit = SimUnit(unit=9, model="static", registers={
        0: 0x3F80, 1: 0x0000,  # float32 1.0: temperature
        20: 0x4000, 21: 0x0000,  # float32 2.0: humidity, a block of its own (20 registers apart)
    })
    sim = ModbusBusSim([unit], link=tmp_path / "ttyBUS")
    sim.late[9] = [1.2, 0.3, 1.5]
    await sim.start()
    registers = [{"metric": "temperature", "function": 3, "address": 0, "type": "float32"},
                 {"metric": "humidity", "function": 3, "address": 20, "type": "float32"}]
    config = bus_config(sim.path, [], timeout=1.0, retries=2,
                        devices=[{"unit": 9, "interval": 0.2, "registers": registers}])
    try:
        async with running(config, harness):
            await async_wait_for(lambda: len(harness.of("serial:ttyBUS/9", "humidity")) >= 3, timeout=30)
    finally:
        await sim.stop()
    assert sim.late[9] == []  # every slow answer went out
    assert {r.value for r in harness.of("serial:ttyBUS/9", "temperature")} == {1.0}
    assert {r.value for r in harness.of("serial:ttyBUS/9", "humidity")} == {2.0}
    assert harness.ctx.counters["timeouts"] == 2  # the first request and the first humidity request
