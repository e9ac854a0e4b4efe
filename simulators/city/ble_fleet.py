"""The BLE fleet: tags on a mock BlueZ (one simulator per group), what the gateway's scanner could
not hear measured on the bus (scan_watch)."""

from __future__ import annotations

import contextlib
from collections import Counter
from functools import cache
from typing import Any

from simulators.city.fleet import DeviceGroup
from simulators.city.scenario import BleGroup

__all__ = ["BleFleet", "ble_readings"]


@cache
def ble_readings(fmt: str) -> int:
    """Readings one measurement of a tag format carries: what the simulated tag encodes (its own
    record, not the gateway's decoder: a decoder that drops a field shows as unexplained), plus
    the rssi the gateway reports for every advertisement it hears."""
    from simulators.ble.tags import SENDS

    return len(SENDS[fmt]) + 1


@cache
def _city_tag_class() -> Any:
    from simulators.ble.tags import SimTag

    class CityTag(SimTag):
        """The simulator's MAC scheme has one byte for the index (256 tags per format); a big
        city puts the index's high byte in the third octet."""

        @property
        def mac(self) -> str:
            low = SimTag(self.format, self.index & 0xFF).mac
            if self.index <= 0xFF:
                return low
            octets = low.split(":")
            octets[2] = f"{0xFE - (self.index >> 8):02X}"
            return ":".join(octets)

    return CityTag


def _city_tag(fmt: str, index: int) -> Any:
    return _city_tag_class()(fmt, index)


class BleFleet(DeviceGroup):
    protocol = "ble"

    def __init__(self, groups: list[BleGroup]) -> None:
        super().__init__()
        self.groups = groups
        self.sims: list[Any] = []
        self.bluez: Any = None
        self.macs: set[str] = set()
        self.watch: Any = None  # simulators.city.scan_watch.ScanWatch on the private bus
        self.watch_synced = False

    def owns(self, device: str) -> bool:
        return device.startswith("ble:")

    @property
    def count(self) -> int:
        return sum(g.count for g in self.groups)

    async def start(self) -> str:
        from simulators.ble.bus import PrivateBluez
        from simulators.ble.sim import BleSimulator
        from simulators.city.scan_watch import ScanWatch

        self.bluez = PrivateBluez()
        address = await self.bluez.start()
        self.watch = ScanWatch()
        await self.watch.start(address)  # before any scanner or advertisement exists
        used: Counter[str] = Counter()
        tags_all = []
        for group in self.groups:
            for i in range(group.count):
                fmt = group.formats[i % len(group.formats)]
                tags_all.append((group, _city_tag(fmt, used[fmt])))
                used[fmt] += 1
        # one simulator (one adapter timetable) per group, all on hci0
        for g, group in enumerate(self.groups):
            tags = [t for grp, t in tags_all if grp is group]
            if not tags:
                continue
            sim = BleSimulator(tags, interval=group.interval, repeats=group.repeats, bluez=self.bluez,
                               adapter="hci0" if g == 0 else f"hci{g}")
            await sim.start()
            self.sims.append(sim)
            self.macs.update(t.mac for t in tags)
        return address

    def driver_configs(self) -> list[dict[str, Any]]:
        out = []
        for g, sim in enumerate(self.sims):
            keys = {t.mac: t.key.hex() for t in sim.tags if t.format == "bthome_enc"}
            out.append({"type": "ble", "name": f"ble-{g}", "adapter": sim.adapter_name, "bthome_keys": keys,
                        "stall_timeout": 5.0, "power_off_seconds": 0.5})
        return out

    def stall(self, mode: str) -> None:
        for sim in self.sims:
            sim.stall(mode)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for sim in self.sims:
            for tag in sim.tags:
                out[f"ble:{tag.mac}"] += len(tag.sent) * ble_readings(tag.format)
        return out

    def nominal_rate(self) -> float:
        return sum(ble_readings(tag.format) / (sim.interval * sim.repeats) for sim in self.sims for tag in sim.tags)

    @staticmethod
    def _device_path(sim: Any, tag: Any) -> str:
        """BlueZ's object path of a remote device (doc/org.bluez.Device.rst: dev_XX_XX_...)."""
        return f"{sim.adapter_path}/dev_{tag.mac.replace(':', '_')}"

    def not_scanning(self) -> Counter[str]:
        """Measurements none of whose advertisements went out while the gateway's scanner had
        a discovery session (scan_watch), in readings."""
        out: Counter[str] = Counter()
        if self.watch is None:
            return out
        for sim in self.sims:
            for tag in sim.tags:
                lost = self.watch.unheard_measurements(self._device_path(sim, tag), len(tag.sent))
                if lost:
                    out[f"ble:{tag.mac}"] += lost * ble_readings(tag.format)
        return out

    def watch_facts(self) -> dict[str, Any]:
        """What the bus watch saw, and whether it saw every measurement the simulator counts."""
        if self.watch is None:
            return {}
        unmatched = sum(1 for sim in self.sims for tag in sim.tags
                        if self.watch.measurements_seen(self._device_path(sim, tag)) != len(tag.sent))
        return {"advertisements": self.watch.advertisements,
                "advertisements_not_scanning": self.watch.unheard_advertisements,
                "synced": self.watch_synced, "tags_with_unmatched_measurements": unmatched,
                "simulator_errors": dict(sum((sim.errors for sim in self.sims), Counter()))}

    async def stop_sending(self) -> None:
        # pause() returns once no advertisement is in flight, so `sent` is final; the watch then
        # reads everything the bus routed up to here.
        for sim in self.sims:
            await sim.pause()
        if self.watch is not None and not self.watch_synced:
            self.watch_synced = await self.watch.sync()

    async def close(self) -> None:
        for sim in self.sims:
            with contextlib.suppress(Exception):
                await sim.stop()
        if self.watch is not None:
            self.watch.stop()
        if self.bluez is not None:
            await self.bluez.stop()
