"""The LoRaWAN fleet: sensors behind virtual packet forwarders (Semtech UDP to the gateway's
concentrator driver) or a network server's MQTT integration, on the city's timetable."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from functools import cache
from typing import Any

from simulators.city.fleet import DeviceGroup, every
from simulators.city.scenario import LoRaWANGroup

__all__ = ["LoRaFleet", "lora_readings"]


# Link quality the gateway reports for every frame it hears: rssi and snr.
LINK_READINGS = 2


@cache
def lora_readings(family: str, index: int) -> int:
    """Readings frame `index` of a sensor carries: the measurements the simulated device put in
    it (its own record, independent of the gateway's decoders, so a decoder that drops one shows
    as unexplained), plus rssi and snr."""
    from simulators.lorawan.sensors import FAMILIES

    _, _, values = FAMILIES[family](index)
    return len(values) + LINK_READINGS


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

    async def connect_network_server(self, ns_broker: tuple[str, int]) -> None:
        """Connect the network-server publishers before anything else opens descriptors: paho's
        threaded loop select()s its socket, and select() cannot take a descriptor above 1023
        (paho/mqtt/client.py `_loop`: the ValueError becomes a lost connection, for ever). A big
        city's ptys and sockets would push a late connection past that."""
        from simulators.lorawan.publisher import NetworkServerPublisher

        for g, group in enumerate(self.groups):
            if group.mode == "network_server" and self.sensors[g]:
                publisher = NetworkServerPublisher(ns_broker[0], ns_broker[1], self.sensors[g], rounds=0)
                await publisher.start()  # rounds=0: connected, publishes only on our timetable
                self.publishers.append(publisher)

    async def start(self, udp_ports: dict[int, int], ns_broker: tuple[str, int] | None) -> None:
        from simulators.lorawan.forwarder import VirtualForwarder

        self.ports = dict(udp_ports)
        publishers = iter(self.publishers)
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
                if self.ns_ready is not None:
                    await self.ns_ready(f"city-lora-{g}-ns")
                publisher = next(publishers)  # connected by connect_network_server
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

        await every(group.interval, len(sensors), send, self.stopping, self.pace)

    async def _send_ns(self, publisher: Any, group: LoRaWANGroup) -> None:
        sensors = publisher.sensors

        async def send(i: int) -> None:
            publisher.publish_one(i, sensors[i])
            publisher.expected.clear()

        await every(group.interval, len(sensors), send, self.stopping, self.pace)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for fleet in self.sensors:
            for sensor in fleet:
                out[f"lora:{sensor.eui_hex}"] += sum(lora_readings(sensor.family, i) for i in range(sensor.sent))
        return out

    def nominal_rate(self) -> float:
        # readings per frame vary with the frame index in some families: the mean of the first 12
        return sum(sum(lora_readings(s.family, i) for i in range(12)) / 12 / group.interval
                   for group, fleet in zip(self.groups, self.sensors, strict=True) for s in fleet)

    def damaged(self) -> Counter[str]:
        out: Counter[str] = Counter()
        family = {s.eui_hex: s.family for fleet in self.sensors for s in fleet}
        for eui, indexes in self.corrupted.items():
            out[f"lora:{eui}"] += sum(lora_readings(family[eui], i) for i in indexes)
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
