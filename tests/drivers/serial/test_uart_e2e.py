"""SDS011 and WXT5xx end to end: simulators on pty pairs -> driver -> windows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simulators.serial import Faults, Sds011Sim, WxtSim
from tests.drivers.serial.conftest import Harness, make_config, running
from tests.support.wait import async_wait_for

# slow: end to end on ptys (make test-fast leaves it out)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

SDS = "serial:ttySDS/a160"


async def test_sds011_active_mode_with_garbage_and_bad_checksums(
    tmp_path: Path, harness: Harness
) -> None:
    # Silent until the driver's reporting-mode command: the port is open then (its input
    # flushed), so every frame sent afterwards is read and the books can balance exactly.
    sim = Sds011Sim(
        tmp_path / "ttySDS", mode="active", period=0.02,
        faults=Faults(corrupt=0.2, garbage=0.2, seed=3, silent=True),
    )
    await sim.start()
    config = make_config(
        port=sim.path, protocol="sds011", sds011={"mode": "active", "silence_timeout": 2.0}
    )
    errors = harness.ctx.decode_errors

    def balanced() -> bool:
        """Every frame sent was read: undamaged ones as readings, each fault counted once."""
        return (len(harness.of(SDS, "pm2_5")) == sim.good_frames_sent
                and errors.get("checksum_mismatch", 0) == sim.faults.corrupted
                and errors.get("garbage", 0) == sim.faults.garbled)

    try:
        async with running(config, harness):
            await async_wait_for(lambda: sim.commands == 1, timeout=10, what="the reporting-mode command")
            sim.faults.silent = False
            await async_wait_for(lambda: len(harness.of(SDS, "pm2_5")) >= 40, timeout=15)
            sim.faults.silent = True  # nothing more goes out: the counts are final
            await async_wait_for(balanced, timeout=5, what="every frame sent read and accounted for")
    finally:
        await sim.stop()
    assert balanced()
    # how many frames went out before 40 were read is the reader's pace, so the seeded faults
    # among them are a dozen or so of each: at least three shows both kinds were exercised
    assert sim.faults.corrupted >= 3 and sim.faults.garbled >= 3
    assert all(4.0 <= r.value <= 12.0 for r in harness.of(SDS, "pm2_5"))
    assert harness.log.count("warning", "decode_error") == len(errors) == 2  # once per cause
    records = {(r.device, r.metric): r for r in harness.windows()}
    assert records[(SDS, "pm10")].unit == "ug/m3"


async def test_sds011_query_mode_sets_the_sensor_and_polls(tmp_path: Path, harness: Harness) -> None:
    sim = Sds011Sim(tmp_path / "ttySDS", mode="active", period=0.05)
    await sim.start()
    config = make_config(
        port=sim.path,
        protocol="sds011",
        sds011={"mode": "query", "query_interval": 0.1, "timeout": 0.5},
    )
    try:
        async with running(config, harness):
            await async_wait_for(lambda: sim.query_mode, timeout=5, what="sensor switched")
            await async_wait_for(lambda: len(harness.of(SDS, "pm10")) >= 8, timeout=10)
            sim.faults.silent = True
            await async_wait_for(lambda: harness.statuses(SDS) == ["offline"], timeout=10)
            sim.faults.silent = False
            await async_wait_for(lambda: harness.statuses(SDS) == ["offline", "ok"], timeout=10)
    finally:
        await sim.stop()
    # a lower bound: the sensor reports by itself until the mode command arrives, and those
    # frames give readings too, so the readings do not count the queries exactly
    assert sim.commands >= 9  # mode command + one query per reading
    assert harness.ctx.counters.get("sds011_replies", 0) == 1  # the mode command's reply, only


WXT = "serial:ttyWXT/0"


async def test_wxt_polled_units_and_invalid_markers(tmp_path: Path, harness: Harness) -> None:
    sim = WxtSim(tmp_path / "ttyWXT", mode="polled", imperial=True, invalid=frozenset({"Ua", "Sx"}))
    await sim.start()
    config = make_config(
        port=sim.path, protocol="wxt", wxt={"mode": "polled", "poll_interval": 0.1, "timeout": 0.5}
    )
    try:
        async with running(config, harness):
            await async_wait_for(lambda: len(harness.of(WXT, "temperature")) >= 5, timeout=10)
            sim.faults.silent = True  # polls go on unanswered: the messages sent are final
            await async_wait_for(lambda: len(harness.of(WXT, "temperature")) == sim.messages_sent,
                                 timeout=5, what="every message sent read")
    finally:
        await sim.stop()
    assert len(harness.of(WXT, "temperature")) == sim.messages_sent >= 5
    assert harness.of(WXT, "humidity") == [] and harness.of(WXT, "wind_speed_max") == []
    # two fields marked invalid in every message
    assert harness.ctx.counters["wxt_invalid_fields"] == 2 * sim.messages_sent
    # degF, mph, inHg, in converted back to the simulator's metric model
    assert all(9.9 <= r.value <= 14.1 for r in harness.of(WXT, "temperature"))
    assert all(101300 <= r.value <= 101340 for r in harness.of(WXT, "pressure"))
    assert all(1.4 <= r.value <= 4.6 for r in harness.of(WXT, "wind_speed"))
    assert harness.ctx.decode_errors == {}
    records = {(r.device, r.metric): r for r in harness.windows()}
    assert records[(WXT, "rain_total")].kind == "counter"
    assert records[(WXT, "pressure")].unit == "Pa"


async def test_wxt_polled_with_crc(tmp_path: Path, harness: Harness) -> None:
    sim = WxtSim(tmp_path / "ttyWXT", mode="polled", faults=Faults(corrupt=0.3, seed=5))
    await sim.start()
    config = make_config(
        port=sim.path,
        protocol="wxt",
        wxt={"mode": "polled", "poll_interval": 0.05, "timeout": 0.3, "use_crc": True,
             "offline_after": 50},
    )
    try:
        async with running(config, harness):
            await async_wait_for(
                lambda: len(harness.of(WXT, "temperature")) >= 5
                and harness.ctx.decode_errors.get("crc_mismatch", 0) >= 1,
                timeout=15,
            )
            sim.faults.silent = True  # polls go on unanswered: the messages sent are final
            await async_wait_for(
                lambda: harness.ctx.decode_errors["crc_mismatch"] == sim.faults.corrupted
                and len(harness.of(WXT, "temperature")) == sim.messages_sent - sim.faults.corrupted,
                timeout=5, what="every message sent read: corrupted ones counted, the rest decoded",
            )
    finally:
        await sim.stop()
    assert harness.ctx.decode_errors == {"crc_mismatch": sim.faults.corrupted}
    assert len(harness.of(WXT, "temperature")) == sim.messages_sent - sim.faults.corrupted


async def test_wxt_automatic_silence_and_garbage(tmp_path: Path, harness: Harness) -> None:
    sim = WxtSim(
        tmp_path / "ttyWXT", mode="automatic", period=0.05, faults=Faults(garbage=0.3, seed=2)
    )
    await sim.start()
    config = make_config(
        port=sim.path,
        protocol="wxt",
        wxt={"mode": "automatic", "timeout": 0.3, "offline_after": 2},
    )
    try:
        async with running(config, harness):
            await async_wait_for(lambda: len(harness.of(WXT, "wind_speed")) >= 10, timeout=10)
            sim.faults.silent = True
            await async_wait_for(lambda: harness.statuses(WXT) == ["offline"], timeout=10)
            sim.faults.silent = False
            await async_wait_for(lambda: harness.statuses(WXT) == ["offline", "ok"], timeout=10)
    finally:
        await sim.stop()
    # lower bounds: messages sent before the driver opened the port are flushed unread, and
    # random noise may hold a line end (one garbled message, two bad lines), so the station's
    # count and the driver's have no one-to-one relation here
    assert sim.faults.garbled >= 1
    assert sum(harness.ctx.decode_errors.values()) >= 1


async def test_sds011_noise_alone_is_still_silence(tmp_path: Path, harness: Harness) -> None:
    sim = Sds011Sim(tmp_path / "ttySDS", mode="active", period=0.05)
    await sim.start()
    config = make_config(
        port=sim.path,
        protocol="sds011",
        sds011={"mode": "active", "silence_timeout": 0.3, "offline_after": 2},
    )

    async def noise() -> None:
        while True:
            sim.port.write(b"\x00\xaa\x13\xab\xc0")
            await asyncio.sleep(0.02)  # a noisy line's pace

    try:
        async with running(config, harness):
            await async_wait_for(lambda: harness.of(SDS, "pm2_5"), timeout=10)
            sim.faults.silent = True
            task = asyncio.create_task(noise())
            try:
                await async_wait_for(lambda: harness.statuses(SDS) == ["offline"], timeout=10)
            finally:
                task.cancel()
    finally:
        await sim.stop()
    # a lower bound: a run of noise is counted once per chunk read, and how the reads cut the
    # stream is the scheduler's
    assert harness.ctx.decode_errors.get("garbage", 0) >= 1
