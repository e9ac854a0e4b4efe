"""The bus watch names exactly the advertisements bleak drops: a real BleakScanner (bleak's BlueZ
backend) on the private bus with the mock BlueZ, a tag advertised while the scanner listens,
after it stopped, and again after it restarted."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from simulators.ble.sim import BleSimulator
from simulators.ble.tags import SimTag
from simulators.city.scan_watch import ScanWatch
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon")


@pytest.fixture
async def bus(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[BleSimulator, ScanWatch, SimTag]]:
    tag = SimTag("ruuvi5", 1)
    sim = BleSimulator([tag], paused=True)  # nothing advertised but what the test sends
    await sim.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.address)
    watch = ScanWatch()
    await watch.start(sim.address)
    try:
        yield sim, watch, tag
    finally:
        watch.stop()
        await sim.stop()


async def test_advertisements_outside_a_discovery_session_are_named(
    bus: tuple[BleSimulator, ScanWatch, SimTag],
) -> None:
    from bleak import BleakScanner
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

    sim, watch, tag = bus
    heard: list[bytes] = []

    def on_advertisement(device: BLEDevice, adv: AdvertisementData) -> None:
        heard.append(adv.manufacturer_data[0x0499])

    path = f"{sim.adapter_path}/dev_{tag.mac.replace(':', '_')}"
    scanner = BleakScanner(on_advertisement, bluez={"adapter": sim.adapter_name})
    await scanner.start()
    await sim.send(tag)  # measurement 0, while listening
    await async_wait_for(lambda: len(heard) == 1, what="bleak hears measurement 0")

    await scanner.stop()
    tag.advance()
    await sim.send(tag)  # measurement 1, only while no discovery session is open: dropped by bleak
    assert await watch.sync()
    assert watch.unheard_measurements(path, 2) == 1
    assert watch.unheard_advertisements == 1
    assert len(heard) == 1

    tag.advance()
    await sim.send(tag)  # measurement 2: its first advertisement goes out while not scanning ...
    scanner = BleakScanner(on_advertisement, bluez={"adapter": sim.adapter_name})
    await scanner.start()
    await sim.send(tag)  # ... its repeat (RSSI only) is heard, with the payload bleak cached
    await async_wait_for(lambda: len(heard) == 2, what="bleak hears the repeat of measurement 2")
    await scanner.stop()
    assert heard[1] != heard[0]
    assert await watch.sync()
    assert watch.measurements_seen(path) == 3
    assert watch.unheard_measurements(path, 3) == 1  # measurement 1 only
    assert (watch.advertisements, watch.unheard_advertisements) == (4, 2)
