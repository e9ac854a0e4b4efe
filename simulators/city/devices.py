"""The city's devices: every simulator of the repository, sized from a scenario, in one loop.

Each group keeps what it sent in the gateway's terms (readings by device), what it damaged on
purpose (and so expects to be lost), and writes its part of the gateway config. The simulators'
own classes do the wire work; this module only schedules them (sends spread evenly over each
interval, on an absolute timetable, so a fleet does not fire in bursts) and injects faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from simulators.city.scenario import BleGroup, ChargePointGroup, LoRaWANGroup, SerialGroup

__all__ = ["BleFleet", "ChargePointFleet", "DeviceGroup", "LoRaFleet", "Pace", "SerialFleet"]

# Readings the gateway derives itself (not sent by any device): left out of the books.
DERIVED_METRICS = frozenset({"sensor_status"})


@dataclass
class Pace:
    """How far behind its timetable a sender ran (seconds): the simulators' own saturation."""

    worst_lag: float = 0.0

    def note(self, lag: float) -> None:
        if lag > self.worst_lag:
            self.worst_lag = lag


async def _every(interval: float, slots: int, send: Any, stop: asyncio.Event, pace: Pace) -> None:
    """Call send(i) for i in 0..slots-1, spread evenly over `interval`, until `stop`."""
    loop = asyncio.get_running_loop()
    step = interval / max(1, slots)
    start = loop.time()
    k = 0
    while not stop.is_set():
        for i in range(slots):
            due = start + k * step
            delay = due - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)  # the devices' timetable
                if stop.is_set():
                    return
            else:
                pace.note(-delay)
            await send(i)
            k += 1


class DeviceGroup:
    """Base of the fleets: `protocol` names the line of the report."""

    protocol = ""

    def __init__(self) -> None:
        self.pace = Pace()
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    def sent(self) -> Counter[str]:
        """Readings sent, by device."""
        raise NotImplementedError

    def damaged(self) -> Counter[str]:
        """Readings inside frames damaged on purpose, by device."""
        return Counter()

    def lost_in_flight(self) -> Counter[str]:
        """Readings on the wire when a fault cut it (a serial cable pulled), by device."""
        return Counter()

    def not_scanning(self) -> Counter[str]:
        """Readings sent while the gateway's receiver was not listening (BLE advertisements
        routed while its scanner had no discovery session), by device."""
        return Counter()

    def driver_configs(self) -> list[dict[str, Any]]:
        return []

    def nominal_rate(self) -> float:
        """Readings per second the scenario prescribes for this fleet (its devices on their
        intervals), against which what arrived is compared."""
        return 0.0

    def owns(self, device: str) -> bool:
        raise NotImplementedError

    def label(self, device: str) -> str:
        """The report line a device belongs to."""
        return self.protocol

    async def stop_sending(self) -> None:
        """Senders finish the message they are on (a cancelled call would leave a reading
        counted as sent that never went out), then stop."""
        self.stopping.set()
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=15.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def close(self) -> None:
        await self.stop_sending()


# --------------------------------------------------------------------------------- LoRaWAN


@cache
def _lora_readings(family: str, index: int) -> int:
    """Readings the gateway makes of frame `index` of a sensor: the driver's own codec applied to
    the payload the simulator built, plus rssi and snr."""
    from drivers.lorawan.decode import payload_readings
    from simulators.lorawan.sensors import FAMILIES

    fport, payload, _ = FAMILIES[family](index)
    return len(payload_readings("0" * 16, family, payload, fport, 0.0, -70.0, 7.0))


class LoRaFleet(DeviceGroup):
    protocol = "lorawan"

    def __init__(self, groups: list[LoRaWANGroup], *, seed: int, first_eui: int) -> None:
        super().__init__()
        from simulators.lorawan.sensors import make_fleet

        self.groups = groups
        self.sensors: list[list[Any]] = []
        offset = first_eui
        for g, group in enumerate(groups):
            per_family = -(-group.count // len(group.families)) if group.count else 0
            fleet = make_fleet(per_family, families=list(group.families), otaa_every=group.otaa_every,
                               seed=seed + g)[: group.count]
            for sensor in fleet:  # distinct DevEUIs across groups
                sensor.dev_eui = (sensor.dev_eui & ~0xFFFFFF) | ((offset + (sensor.dev_eui & 0xFFFFF)) & 0xFFFFFF)
                if sensor.activation == "abp":
                    sensor.dev_addr = 0x26000000 | ((offset + (sensor.dev_addr & 0xFFFFF)) & 0xFFFFFF)
            offset += 0x100000
            self.sensors.append(fleet)
        self.euis = {s.eui_hex: ("lorawan-udp" if group.mode == "concentrator" else "lorawan-ns")
                     for group, fleet in zip(groups, self.sensors, strict=True) for s in fleet}
        self.corrupt_rate = 0.0
        self.rng = random.Random(seed)
        self.corrupted: dict[str, list[int]] = {}
        self.forwarders: list[Any] = []
        self.publishers: list[Any] = []
        self.ports: dict[int, int] = {}  # group index -> UDP port of the gateway
        self.kernel_drops = 0
        self.ns_ready: Any = None  # async (client id) -> None: the gateway subscribed on the NS broker

    def owns(self, device: str) -> bool:
        return device.startswith("lora:") and device[5:] in self.euis

    def label(self, device: str) -> str:
        return self.euis.get(device[5:], "lorawan")

    def driver_configs(self, *, udp_ports: dict[int, int] | None = None, ns_broker: tuple[str, int] | None = None) -> list[dict[str, Any]]:  # type: ignore[override]
        out = []
        for g, group in enumerate(self.groups):
            if not group.count:
                continue
            name = f"lora-{g}-{'udp' if group.mode == 'concentrator' else 'ns'}"
            table: dict[str, Any] = {"type": "lorawan", "name": name, "mode": group.mode, "state_flush_interval": 5.0}
            if group.mode == "concentrator":
                assert udp_ports is not None
                table |= {"listen": f"127.0.0.1:{udp_ports[g]}", "join_accept_delay": 1.0, "dedup_window": 0.2}
                table["devices"] = [s.device_config() for s in self.sensors[g]]
            else:
                assert ns_broker is not None
                table |= {"mqtt_host": ns_broker[0], "mqtt_port": ns_broker[1],
                          "mqtt_client_id": f"city-{name}"}
                table["devices"] = [{"dev_eui": s.eui_hex, "codec": s.family} for s in self.sensors[g]]
            out.append(table)
        return out

    async def start(self, udp_ports: dict[int, int], ns_broker: tuple[str, int] | None) -> None:
        from simulators.lorawan.forwarder import VirtualForwarder
        from simulators.lorawan.publisher import NetworkServerPublisher

        self.ports = dict(udp_ports)
        for g, group in enumerate(self.groups):
            fleet = self.sensors[g]
            if not fleet:
                continue
            if group.mode == "concentrator":
                # join_timeout: a JoinAccept comes join_accept_delay (1 s) after the request, later
                # when the gateway is busy; retrying too early makes a second session the device
                # never learns about (the first accept is taken under the new DevNonce).
                forwarder = VirtualForwarder(("127.0.0.1", udp_ports[g]), fleet, gateways=group.gateways,
                                             interval=group.interval, rounds=0, join_timeout=10.0)
                await forwarder.start()  # rounds=0: its own loop only joins; we send on our timetable
                self.forwarders.append(forwarder)
                self.tasks.append(asyncio.create_task(self._send_udp(forwarder, group)))
            else:
                assert ns_broker is not None
                if self.ns_ready is not None:
                    await self.ns_ready(f"city-lora-{g}-ns")
                publisher = NetworkServerPublisher(ns_broker[0], ns_broker[1], fleet, rounds=0)
                await publisher.start()
                self.publishers.append(publisher)
                self.tasks.append(asyncio.create_task(self._send_ns(publisher, group)))
        # OTAA joins done before anything else starts (the charge points' boot storm)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(f.done.wait() for f in self.forwarders)), 60)

    async def _send_udp(self, forwarder: Any, group: LoRaWANGroup) -> None:
        await forwarder.done.wait()  # OTAA joins finished
        sensors = forwarder.sensors

        async def send(i: int) -> None:
            sensor = sensors[i]
            if not sensor.joined:
                return
            index = sensor.sent
            frame, _ = sensor.next_frame()
            if self.corrupt_rate and self.rng.random() < self.corrupt_rate:
                damaged = bytearray(frame)
                damaged[-1] ^= 0xFF  # the MIC: the gateway must refuse it (bad_mic)
                frame = bytes(damaged)
                self.corrupted.setdefault(sensor.eui_hex, []).append(index)
            forwarder.broadcast(frame)
            forwarder.counts["frames"] += 1

        await _every(group.interval, len(sensors), send, self.stopping, self.pace)

    async def _send_ns(self, publisher: Any, group: LoRaWANGroup) -> None:
        sensors = publisher.sensors

        async def send(i: int) -> None:
            publisher.publish_one(i, sensors[i])
            publisher.expected.clear()

        await _every(group.interval, len(sensors), send, self.stopping, self.pace)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for fleet in self.sensors:
            for sensor in fleet:
                out[f"lora:{sensor.eui_hex}"] += sum(_lora_readings(sensor.family, i) for i in range(sensor.sent))
        return out

    def nominal_rate(self) -> float:
        # readings per frame vary with the frame index in some families: the mean of the first 12
        return sum(sum(_lora_readings(s.family, i) for i in range(12)) / 12 / group.interval
                   for group, fleet in zip(self.groups, self.sensors, strict=True) for s in fleet)

    def damaged(self) -> Counter[str]:
        out: Counter[str] = Counter()
        family = {s.eui_hex: s.family for fleet in self.sensors for s in fleet}
        for eui, indexes in self.corrupted.items():
            out[f"lora:{eui}"] += sum(_lora_readings(family[eui], i) for i in indexes)
        return out

    def read_kernel_drops(self) -> None:
        """Datagrams the kernel dropped at the gateway's UDP sockets because their receive
        buffers were full (the `drops` column of /proc/net/udp): a named loss."""
        wanted = {f"{port:04X}" for port in self.ports.values()}
        drops = 0
        with contextlib.suppress(OSError), open("/proc/net/udp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1].rsplit(":", 1)[1] in wanted and fields[2].startswith("00000000"):
                    drops += int(fields[-1])
        self.kernel_drops = drops

    def frames(self) -> int:
        return sum(s.sent for fleet in self.sensors for s in fleet)

    async def close(self) -> None:
        await self.stop_sending()
        for sim in (*self.forwarders, *self.publishers):
            with contextlib.suppress(Exception):
                await sim.stop()


# --------------------------------------------------------------------------------- serial


@cache
def _wxt_readings() -> int:
    from drivers.serial.wxt import decode_line
    from simulators.serial.wxt import WxtSim

    return len(decode_line(WxtSim().message(), "x", 0.0).readings)


def kind_sends_by_itself(kind: str) -> bool:
    return kind in ("sds011", "wxt")


def _drain(tty_path: str) -> bytes:
    """What waits unread on the gateway's side of a pty (a second reader takes it out)."""
    if not tty_path:
        return b""
    chunks = []
    try:
        fd = os.open(tty_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return b""
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _open_ttys(pid: int) -> set[str]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


class SerialFleet(DeviceGroup):
    protocol = "serial"

    def __init__(self, groups: list[SerialGroup], devdir: Path) -> None:
        super().__init__()
        self.groups = groups
        self.devdir = devdir
        self.sims: list[tuple[str, SerialGroup, Any]] = []  # (kind, group, simulator)
        self.corrupt_rate = 0.0
        self.in_flight: Counter[str] = Counter()

    def owns(self, device: str) -> bool:
        return device.startswith("serial:")

    async def start(self) -> None:
        from simulators.serial import ModbusBusSim, Sds011Sim, SimUnit, WxtSim

        self.devdir.mkdir(parents=True, exist_ok=True)
        for g, group in enumerate(self.groups):
            for p in range(group.ports):
                link = self.devdir / f"{group.kind}-{g}-{p}"
                sim: Any
                if group.kind == "modbus":
                    sim = ModbusBusSim([SimUnit(unit=u) for u in range(1, group.units_per_port + 1)], link=link)
                elif group.kind == "sds011":
                    sim = Sds011Sim(link, mode="active", period=group.interval, device_id=0xA000 + p % 0x1000)
                else:
                    sim = WxtSim(link, mode="automatic", period=group.interval)
                if kind_sends_by_itself(group.kind):
                    sim.faults.silent = True  # quiet until the gateway holds the port (hold_until_open)
                await sim.start()
                self.sims.append((group.kind, group, sim))

    async def hold_until_open(self, pid: int, within: float = 15.0, sims: list[Any] | None = None) -> None:
        """Active senders (SDS011, WXT) stay silent until the gateway process has their pty open
        (seen in /proc/<pid>/fd), so no frame is written before anyone listens."""
        chosen = self.sims if sims is None else [t for t in self.sims if t[2] in sims]
        waiting = {sim for kind, _, sim in chosen if kind_sends_by_itself(kind)}
        deadline = asyncio.get_running_loop().time() + within
        while waiting:
            opened = _open_ttys(pid)
            for sim in [s for s in waiting if s.port.slave_path in opened]:
                sim.faults.silent = False
                sim.faults.dropped = 0
                waiting.discard(sim)
            if not waiting or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)  # poll step while the gateway opens its ports
        for sim in waiting:  # never opened: let it send anyway, the report shows the loss
            sim.faults.silent = False

    def driver_configs(self) -> list[dict[str, Any]]:
        out = []
        for kind, group, sim in self.sims:
            name = f"serial-{Path(sim.path).name}"
            table: dict[str, Any] = {"type": "serial", "name": name, "port": sim.path, "protocol": kind,
                                     "reopen_backoff_initial": 0.2, "reopen_backoff_max": 2.0}
            if kind == "modbus":
                table["modbus"] = {"timeout": 0.5, "retries": 2, "offline_after": 3, "offline_backoff_initial": 1.0,
                                   "offline_backoff_max": 5.0,
                                   "devices": [{"unit": u, "interval": group.interval, "map": "xy_md02"}
                                               for u in sorted(sim.units)]}
            elif kind == "sds011":
                table["sds011"] = {"mode": "active", "silence_timeout": max(10.0, 3 * group.interval), "set_mode": False}
            else:
                table["wxt"] = {"mode": "automatic", "timeout": max(10.0, 3 * group.interval)}
            out.append(table)
        return out

    def set_corruption(self, rate: float) -> None:
        # WXT lines carry no checksum in automatic mode: a flipped byte may still parse, so it is
        # never corrupted on purpose (its losses would have no exact count).
        for kind, _, sim in self.sims:
            if kind == "modbus":
                for unit in sim.units.values():
                    unit.faults.corrupt = rate
            elif kind == "sds011":
                sim.faults.corrupt = rate

    async def stop_sending(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        for kind, _, sim in self.sims:  # every device falls silent (answers nothing, sends nothing)
            if kind == "modbus":
                for unit in sim.units.values():
                    unit.faults.silent = True
            else:
                sim.faults.silent = True

    def unplug(self, ports: int) -> list[Any]:
        """Pull the first `ports` cables. Bytes the devices had written that the gateway had not
        read yet go down with the cable: they are taken out of the tty first and counted as
        readings in flight when unplugged (a named loss)."""
        pulled = []
        for kind, _, sim in self.sims[:ports]:
            side = sim.gateway_side if kind == "modbus" else sim.port
            pending = _drain(side.slave_path) if side.plugged else b""
            self._count_in_flight(kind, sim, pending)
            sim.unplug()
            pulled.append(sim)
        return pulled

    def replug(self, pulled: list[Any], pid: int) -> None:
        """Cables back. A device that sends by itself stays quiet until the gateway has reopened
        the port (its reopen backoff), as at start-up: the books count frames someone could hear."""
        for kind, _, sim in self.sims:
            if sim in pulled:
                if kind_sends_by_itself(kind):
                    sim.faults.silent = True
                sim.replug()
        self.tasks.append(asyncio.create_task(self.hold_until_open(pid, sims=pulled)))

    def _count_in_flight(self, kind: str, sim: Any, pending: bytes) -> None:
        base = Path(sim.path).name
        if not pending:
            return
        if kind == "modbus":
            # answers of the XY-MD02 map: unit, 0x04, 4 data bytes follow (9 bytes with the CRC)
            at = 0
            while at + 9 <= len(pending):
                if pending[at + 1] == 0x04 and pending[at + 2] == 4 and pending[at] in sim.units:
                    self.in_flight[f"serial:{base}/{pending[at]}"] += 2
                    at += 9
                else:
                    at += 1
        elif kind == "sds011":
            self.in_flight[f"serial:{base}/{sim.device_id:04x}"] += 2 * pending.count(b"\xaa\xc0")
        else:
            self.in_flight[f"serial:{base}/{sim.address}"] += _wxt_readings() * pending.count(b"\n")

    def lost_in_flight(self) -> Counter[str]:
        return Counter(self.in_flight)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for kind, _, sim in self.sims:
            base = Path(sim.path).name
            if kind == "modbus":
                for unit in sim.units.values():
                    good = unit.reads - unit.faults.corrupted - unit.faults.dropped
                    out[f"serial:{base}/{unit.unit}"] += 2 * good  # xy_md02: temperature, humidity
            elif kind == "sds011":
                out[f"serial:{base}/{sim.device_id:04x}"] += 2 * sim.frames_sent
            else:
                out[f"serial:{base}/{sim.address}"] += _wxt_readings() * sim.messages_sent
        return out

    def damaged(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for kind, _, sim in self.sims:
            if kind == "sds011":
                out[f"serial:{Path(sim.path).name}/{sim.device_id:04x}"] += 2 * (sim.frames_sent - sim.good_frames_sent)
        return out

    def nominal_rate(self) -> float:
        per_report = {"modbus": 2, "sds011": 2}  # XY-MD02: temperature, humidity; SDS011: PM2.5, PM10
        return sum((group.units_per_port if kind == "modbus" else 1) * per_report.get(kind, _wxt_readings())
                   / group.interval for kind, group, _ in self.sims)

    def retried(self) -> int:
        """Modbus answers damaged on purpose: the driver retries them, so no reading is lost."""
        return sum(u.faults.corrupted for kind, _, sim in self.sims if kind == "modbus" for u in sim.units.values())

    async def close(self) -> None:
        for _, _, sim in self.sims:
            with contextlib.suppress(Exception):
                await sim.stop()


# --------------------------------------------------------------------------------- BLE


@cache
def _ble_readings(fmt: str) -> int:
    """Readings the gateway makes of one measurement of a tag format: the driver's own pipeline
    applied to the advertisement the simulator builds (rssi included)."""
    from drivers.ble.pipeline import AdvertisementPipeline
    from simulators.ble.tags import SimTag

    tag = SimTag(fmt, 0)
    pipeline = AdvertisementPipeline(bthome_keys={tag.mac: tag.key} if fmt == "bthome_enc" else {})
    manufacturer, service = tag.advertisement()
    _, readings = pipeline.process(tag.mac, manufacturer, service, -60, 0.0)
    return len(readings)


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
                out[f"ble:{tag.mac}"] += len(tag.sent) * _ble_readings(tag.format)
        return out

    def nominal_rate(self) -> float:
        return sum(_ble_readings(tag.format) / (sim.interval * sim.repeats) for sim in self.sims for tag in sim.tags)

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
                    out[f"ble:{tag.mac}"] += lost * _ble_readings(tag.format)
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


# --------------------------------------------------------------------------------- OCPP


@dataclass
class _CpState:
    drop_next: bool = False


class ChargePointFleet(DeviceGroup):
    protocol = "ocpp"

    def __init__(self, groups: list[ChargePointGroup], *, seed: int) -> None:
        super().__init__()
        self.groups = groups
        self.seed = seed
        self.fleets: list[Any] = []
        self.drops = 0
        self.reconnects = 0
        self.errors: Counter[str] = Counter()
        self._drop: set[str] = set()
        self.booted = 0
        self.steps = 0  # session steps taken on the timetable
        self.step_readings = 0  # readings those steps sent

    def owns(self, device: str) -> bool:
        return device.startswith("ocpp:")

    def driver_configs(self, port: int) -> list[dict[str, Any]]:  # type: ignore[override]
        if not any(g.count for g in self.groups):
            return []
        return [{"type": "ocpp", "name": "charge-points", "host": "127.0.0.1", "port": port, "path_prefix": "/ocpp/",
                 "allowed_ids": ["CP[0-9]+-[0-9]{4,}"], "heartbeat_interval": 3600, "ping_interval": 0}]

    async def start(self, port: int) -> None:
        from simulators.ocpp.fleet import Fleet, FleetConfig

        for g, group in enumerate(self.groups):
            if not group.count:
                continue
            config = FleetConfig(
                url=f"ws://127.0.0.1:{port}/ocpp/", version=group.version, charge_points=group.count,
                connectors=group.connectors, id_prefix=f"CP{g}-", seed=self.seed + g, start_time=time.time(),
                time_step=group.interval, fault_probability=group.fault_probability, reconnect_delay=0.5,
            )
            fleet = Fleet(config)
            self.fleets.append((group, fleet))
        # connect and boot in bounded parallel so 468 x scale handshakes do not all collide
        limit = asyncio.Semaphore(64)

        async def boot(cp: Any) -> None:
            async with limit:
                try:
                    cp.now = time.time()
                    await cp.start()
                    self.booted += 1
                except Exception as error:  # noqa: BLE001 - counted, the run goes on
                    self.errors[f"boot: {type(error).__name__}"] += 1

        await asyncio.gather(*(boot(cp) for _, fleet in self.fleets for cp in fleet.charge_points))
        for group, fleet in self.fleets:
            cps = fleet.charge_points
            for i, cp in enumerate(cps):
                offset = group.interval * i / len(cps)
                self.tasks.append(asyncio.create_task(self._run_cp(cp, group.interval, offset)))

    async def _run_cp(self, cp: Any, interval: float, offset: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + offset
        k = 0
        while not self.stopping.is_set():
            delay = start + k * interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)  # the charge point's timetable
                if self.stopping.is_set():
                    return
            else:
                self.pace.note(-delay)
            cp.now = time.time() - cp.config.time_step  # step() adds time_step: stamp the wall clock
            connects = cp.connects
            before = len(cp.expected)
            try:
                await cp.step()
            except Exception as error:  # noqa: BLE001 - counted; the charge point carries on
                self.errors[f"step: {type(error).__name__}"] += 1
            self.steps += 1
            self.step_readings += len(cp.expected) - before
            self.reconnects += cp.connects - connects
            if cp.ident in self._drop:
                self._drop.discard(cp.ident)
                with contextlib.suppress(Exception):
                    await cp.drop()
                self.drops += 1
            k += 1

    def disconnect(self, count: int) -> None:
        """The next `count` charge points drop their connection after their current step (between
        messages, so nothing is half sent); their next message reconnects."""
        cps = [cp for _, fleet in self.fleets for cp in fleet.charge_points]
        for cp in cps[:count]:
            self._drop.add(cp.ident)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for _, fleet in self.fleets:
            for cp in fleet.charge_points:
                for expected in cp.expected:
                    out[expected.device] += 1
        return out

    def nominal_rate(self) -> float:
        """Steps due per second times the readings a step sent on average in this run (what a
        step sends depends on the connectors' simulated sessions)."""
        if not self.steps:
            return 0.0
        per_step = self.step_readings / self.steps
        return sum(len(fleet.charge_points) / group.interval for group, fleet in self.fleets) * per_step

    @property
    def charge_points(self) -> int:
        return sum(len(f.charge_points) for _, f in self.fleets)

    async def close(self) -> None:
        await self.stop_sending()
        for _, fleet in self.fleets:
            with contextlib.suppress(Exception):
                await fleet.stop()


@dataclass
class Fleets:
    lora: LoRaFleet
    serial: SerialFleet
    ble: BleFleet
    ocpp: ChargePointFleet
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all(self) -> list[DeviceGroup]:
        return [self.lora, self.serial, self.ble, self.ocpp]
