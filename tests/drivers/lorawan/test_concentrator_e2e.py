"""Concentrator mode end to end: virtual packet forwarders send real UDP datagrams to the
driver on loopback (ABP and OTAA with the join, three gateways hearing every frame)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from drivers.lorawan import phy
from drivers.lorawan.driver import LoRaWANDriver
from gateway.windows import Aggregator, finalize
from simulators.lorawan import VirtualForwarder, make_fleet
from tests.drivers.lorawan.conftest import Collected, make_config
from tests.support.wait import async_wait_for

# slow: end to end over UDP from the simulated forwarder (make test-fast leaves it out)
pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def running(driver: LoRaWANDriver) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(driver.run())
    await async_wait_for(lambda: driver.bound_port or task.done(), what="udp listener")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_fleet_through_three_gateways(collected: Collected) -> None:
    fleet = make_fleet(2, otaa_every=2, seed=7)  # 10 sensors, 5 families, half OTAA
    config = make_config(mode="concentrator", listen="127.0.0.1:0", dedup_window=0.1, state_flush_interval=0.1,
                         devices=[s.device_config() for s in fleet])
    ctx = collected.context()
    driver = LoRaWANDriver(config, ctx)
    async with running(driver):
        sim = VirtualForwarder(("127.0.0.1", driver.bound_port), fleet, gateways=3, interval=0.05, rounds=3)
        await sim.start()
        try:
            await asyncio.wait_for(sim.done.wait(), 30)
            frames = sim.counts["frames"]
            assert frames == 30 and sim.counts["joins"] == 5
            await async_wait_for(lambda: ctx.counters.get("uplinks", 0) == frames, what="every frame decoded")
            await async_wait_for(lambda: sim.counts["push_ack"] == sim.counts["push_data"] and sim.counts["pull_ack"] >= 3,
                                 what="every PUSH_DATA and PULL_DATA acknowledged")
            # the join: answered as PULL_RESP on RX1 = uplink tmst + 5 s, acknowledged by TX_ACK
            assert ctx.counters["joins"] == 5 and len(sim.downlinks) == 5
            assert all(d.tmst is not None and d.ipol and d.freq == 868.1 and d.datr == "SF7BW125" for d in sim.downlinks)
            # RX1 of the best gateway (gateway 0): its own tmst of the JoinRequest + JOIN_ACCEPT_DELAY1
            assert all((0, (d.tmst or 0) - 5_000_000) in sim.join_tmsts for d in sim.downlinks)
            await async_wait_for(lambda: ctx.counters.get("tx_ack", 0) == 5, what="TX_ACKs")
            assert ctx.counters["duplicates"] == 2 * frames + 2 * 5  # 3 gateways: 2 copies dropped each
            assert ctx.decode_errors == {}
        finally:
            await sim.stop()

    by_device: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in collected.readings:
        by_device[r.device][r.metric].append(r.value)  # type: ignore[arg-type]
    assert set(by_device) == {f"lora:{s.eui_hex}" for s in fleet}
    for metrics in by_device.values():
        assert metrics["rssi"] == [-60.0] * 3 and metrics["snr"] == [9.0] * 3  # best gateway kept
    for eui, expected in sim.expected:
        got = by_device[f"lora:{eui}"]
        for metric, value in expected.items():
            want = value if isinstance(value, str) else pytest.approx(value, abs=0.01)
            assert any(v == want for v in got[metric]), (eui, metric)

    # windows: one record per device and metric, three readings each
    agg = Aggregator(window=60, grace=10.0, max_lateness=3600.0)
    for reading in collected.readings:
        agg.add(reading)
    result = agg.flush_all()
    records = [finalize(key[0], key[1], start, 60, acc) for start, key, acc in result.closed]
    rssi = [r for r in records if r.metric == "rssi"]
    assert sum(r.count for r in rssi) == 30 and all(r.max == -60.0 for r in rssi)
    temps = [r for r in records if r.metric == "temperature"]
    assert sum(r.count for r in temps) == 30


async def test_bad_frames_are_rejected_and_counted(collected: Collected) -> None:
    fleet = make_fleet(1, families=["cayenne_lpp", "elsys"], otaa_every=0, seed=3)
    config = make_config(mode="concentrator", listen="127.0.0.1:0", dedup_window=0.05,
                         devices=[s.device_config() for s in fleet])
    ctx = collected.context()
    driver = LoRaWANDriver(config, ctx)
    async with running(driver):
        sim = VirtualForwarder(("127.0.0.1", driver.bound_port), fleet, gateways=1, rounds=0)
        await sim.start()
        try:
            lpp = fleet[0]
            good, _ = lpp.next_frame()
            sim.push(good)
            await async_wait_for(lambda: ctx.counters.get("uplinks") == 1, what="good frame")
            tampered = good[:-1] + bytes((good[-1] ^ 0xFF,))
            sim.push(tampered)  # bad MIC (different bytes, so not a duplicate)
            lpp.fcnt -= 1
            replay, _ = lpp.next_frame()  # same counter again, other payload: a replay, not a duplicate
            assert replay != good
            sim.push(replay)
            stranger = phy.build_data_frame(nwk_skey=bytes(16), app_skey=bytes(16), dev_addr=0x01020304, fcnt32=1,
                                            fport=1, payload=b"\x01\x67\x00\x01")
            sim.push(stranger)  # unknown DevAddr
            sim.push("this is not base64!")  # bad base64
            sim.push(b"\x40\x01\x02\x03")  # truncated
            sim.push(good, stat=-1)  # CRC failed at the concentrator
            sim.send_datagram(b"\x02\x00")  # not a Semtech datagram
            undecodable = phy.build_data_frame(nwk_skey=lpp.nwk_skey, app_skey=lpp.app_skey, dev_addr=lpp.dev_addr,
                                               fcnt32=lpp.fcnt + 5, fport=1, payload=b"\x01\xEE\x00")
            sim.push(undecodable)  # valid frame, payload the codec rejects
            expected = {"bad_mic": 1, "replay": 1, "unknown_devaddr": 1, "bad_base64": 1, "truncated": 1,
                        "bad_udp": 1, "codec_cayenne_lpp": 1}
            await async_wait_for(lambda: ctx.decode_errors == expected, what=f"{expected}, got {ctx.decode_errors}")
            sim.push(tampered[:-1] + bytes((tampered[-1] ^ 0x0F,)))  # a second bad MIC: counted, not logged
            await async_wait_for(lambda: ctx.decode_errors["bad_mic"] == 2, what="second bad MIC counted")
            logged = [fields["cause"] for _, fields in collected.warnings]
            assert sorted(logged) == sorted(expected), "each cause logged exactly once"
            assert ctx.counters["crc_error"] == 1
            assert ctx.counters["uplinks"] == 2  # the good one and the undecodable one
            assert [r.metric for r in collected.readings] == ["temperature", "humidity", "pressure", "rssi", "snr"]
        finally:
            await sim.stop()


async def test_sessions_and_counters_survive_a_restart(collected: Collected) -> None:
    fleet = make_fleet(1, families=["milesight", "dragino_lht65"], otaa_every=1, seed=5)  # both OTAA
    config = make_config(mode="concentrator", listen="127.0.0.1:0", dedup_window=0.0, state_flush_interval=60.0,
                         devices=[s.device_config() for s in fleet])
    ctx = collected.context()
    first = LoRaWANDriver(config, ctx)
    async with running(first):
        sim = VirtualForwarder(("127.0.0.1", first.bound_port), fleet, gateways=1, interval=0.01, rounds=2)
        await sim.start()
        await asyncio.wait_for(sim.done.wait(), 20)
        await async_wait_for(lambda: ctx.counters.get("uplinks") == 4, what="first run")
        await sim.stop()
    # close() wrote the counters even though the periodic flush (60 s) never ran
    assert (collected.state_dir / "lorawan-sessions.json").exists()

    ctx2 = collected.context()
    second = LoRaWANDriver(config, ctx2)
    async with running(second):
        sim2 = VirtualForwarder(("127.0.0.1", second.bound_port), fleet, gateways=1, interval=0.01, rounds=1)
        await sim2.start()  # no rejoin: the sensors keep their session and counters
        await asyncio.wait_for(sim2.done.wait(), 20)
        await async_wait_for(lambda: ctx2.counters.get("uplinks") == 2, what="second run without rejoin")
        assert "joins" not in ctx2.counters
        sensor = fleet[0]
        sensor.fcnt -= 2  # a counter the first run already accepted, with a new payload
        frame, _ = sensor.next_frame()
        sim2.push(frame)
        await async_wait_for(lambda: ctx2.decode_errors.get("replay") == 1, what="replay across the restart")
        await sim2.stop()


async def test_garbage_on_the_socket_never_stops_the_driver(collected: Collected) -> None:
    """Random and mutated datagrams through the real socket: counted, and the next good frame
    still decodes."""
    import base64
    import random

    from drivers.lorawan import semtech_udp

    fleet = make_fleet(1, families=["elsys"], otaa_every=0, seed=9)
    config = make_config(mode="concentrator", listen="127.0.0.1:0", dedup_window=0.0,
                         devices=[s.device_config() for s in fleet])
    ctx = collected.context()
    driver = LoRaWANDriver(config, ctx)
    rng = random.Random(1234)
    async with running(driver) as task:
        sim = VirtualForwarder(("127.0.0.1", driver.bound_port), fleet, rounds=0)
        await sim.start()
        try:
            template = semtech_udp.build_push_data(1, 2, [semtech_udp.RxPk(data=base64.b64encode(
                fleet[0].next_frame()[0]).decode())])
            for i in range(300):
                if i % 3 == 0:
                    data = rng.randbytes(rng.randrange(0, 64))
                else:
                    mutable = bytearray(template)
                    for _ in range(rng.randrange(1, 6)):
                        mutable[rng.randrange(len(mutable))] = rng.randrange(256)
                    data = bytes(mutable)
                sim.send_datagram(data)
                if i % 50 == 49:  # a PULL_DATA round trip as barrier: never overflow the socket buffer
                    acks = sim.counts["pull_ack"]
                    sim.pull()
                    await async_wait_for(lambda acks=acks: sim.counts["pull_ack"] > acks, what="barrier")
            good, values = fleet[0].next_frame()
            sim.push(good)
            await async_wait_for(lambda: any(r.metric == "co2" and r.value == values["co2"] for r in collected.readings),
                                 what="the good frame after the garbage")
            assert not task.done()
            # seeded: the same 300 datagrams every run, so the same causes, exactly
            assert ctx.decode_errors == {"bad_udp": 275, "bad_base64": 3, "bad_mic": 6, "unknown_devaddr": 1}
            # every rxpk that passed the UDP layer was refused, decoded or a duplicate
            counters = ctx.counters
            assert counters["rxpk"] == (sum(ctx.decode_errors.values()) - ctx.decode_errors["bad_udp"]
                                        + counters["uplinks"] + counters["duplicates"])
        finally:
            await sim.stop()


async def test_a_disk_that_refuses_the_state_write_never_stops_the_driver(collected: Collected) -> None:
    """ENOSPC, a read-only remount, a directory in the way: the flush is counted and retried,
    frames keep flowing, and the state is written once the disk takes it again."""
    fleet = make_fleet(1, otaa_every=0, seed=3)
    config = make_config(mode="concentrator", listen="127.0.0.1:0", dedup_window=0.0, state_flush_interval=0.05,
                         devices=[s.device_config() for s in fleet])
    ctx = collected.context()
    driver = LoRaWANDriver(config, ctx)
    blocker = driver.store.counters_path.with_suffix(".tmp")
    blocker.mkdir(parents=True)  # the temp file cannot be created: every counters write fails
    async with running(driver) as task:
        sim = VirtualForwarder(("127.0.0.1", driver.bound_port), fleet, gateways=1, interval=0.05, rounds=4)
        await sim.start()
        try:
            await asyncio.wait_for(sim.done.wait(), 30)
            await async_wait_for(lambda: ctx.counters.get("uplinks", 0) == sim.counts["frames"], what="every frame")
            await async_wait_for(lambda: ctx.counters.get("state_write_failed", 0) >= 2, what="failed flushes")
            assert not task.done() and not driver.store.counters_path.exists()
            blocker.rmdir()
            await async_wait_for(lambda: driver.store.counters_path.exists() and not driver.store.dirty,
                                 what="the state written once the disk takes it")
        finally:
            await sim.stop()
    assert sum(1 for _ in driver.store.by_eui) == 5 and ctx.decode_errors == {}
