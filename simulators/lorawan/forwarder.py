"""Virtual packet forwarders: real Semtech UDP (protocol v2) datagrams on loopback.

Each virtual gateway has its own UDP socket, sends PULL_DATA keep-alives (so the server knows
where to send downlinks), PUSH_DATA with one rxpk per heard frame, and answers PULL_RESP with
TX_ACK. With several gateways every frame is heard by all of them with different RSSI/SNR, as
on a dense city deployment: the server must collapse the copies.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.lorawan import semtech_udp
from drivers.lorawan.semtech_udp import RxPk
from simulators.lorawan.sensors import VirtualSensor

__all__ = ["VirtualForwarder"]


class _GatewayProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: VirtualForwarder, index: int) -> None:
        self.owner, self.index = owner, index
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.owner._received(self.index, data)

    def error_received(self, exc: Exception) -> None:
        self.owner.counts["send_errors"] += 1


@dataclass
class VirtualForwarder:
    server: tuple[str, int]
    sensors: list[VirtualSensor]
    gateways: int = 1
    interval: float = 1.0  # seconds between rounds (each sensor sends once per round)
    duration: float | None = None  # stop sending after this many seconds
    rounds: int | None = None  # or after this many rounds
    join_timeout: float = 2.0
    gateway_eui_base: int = 0xAA555A0000000000
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("frames", "datagrams", "push_data", "push_ack", "pull_ack", "pull_resp", "join_requests", "joins",
         "send_errors"), 0))
    downlinks: list[semtech_udp.TxPk] = field(default_factory=list)
    expected: list[tuple[str, dict[str, float | str]]] = field(default_factory=list)
    join_tmsts: set[tuple[int, int]] = field(default_factory=set)  # (gateway, tmst) of JoinRequests

    def __post_init__(self) -> None:
        self._protocols: list[_GatewayProtocol] = []
        self._task: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self._join_event = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> VirtualForwarder:
        loop = asyncio.get_running_loop()
        for index in range(self.gateways):
            _, protocol = await loop.create_datagram_endpoint(
                functools.partial(_GatewayProtocol, self, index), remote_addr=self.server
            )
            self._protocols.append(protocol)
        self._keepalive = asyncio.create_task(self._pull_loop())
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        for task in (self._task, self._keepalive):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        self._protocols.clear()

    # --- wire --------------------------------------------------------------------------------

    def gateway_eui(self, index: int) -> int:
        return self.gateway_eui_base | index

    def send_datagram(self, data: bytes, gateway: int = 0) -> None:
        transport = self._protocols[gateway].transport
        assert transport is not None
        transport.sendto(data)
        self.counts["datagrams"] += 1

    def push(self, phy_payload: bytes | str, gateway: int = 0, *, rssi: float = -70.0, snr: float = 7.5,
             stat: int = 1) -> int:
        """Send one PUSH_DATA carrying one rxpk; `phy_payload` as bytes or raw base64 text.
        Returns the concentrator timestamp used."""
        data = phy_payload if isinstance(phy_payload, str) else base64.b64encode(phy_payload).decode()
        size = len(phy_payload) if isinstance(phy_payload, bytes) else 0
        tmst = int(time.monotonic() * 1e6) & 0xFFFFFFFF
        rxpk = RxPk(
            data=data, tmst=tmst, time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            freq=868.1, chan=0, rfch=0, stat=stat, modu="LORA", datr="SF7BW125", codr="4/5",
            rssi=rssi, lsnr=snr, size=size,
        )
        token = int.from_bytes(os.urandom(2), "big")
        self.send_datagram(semtech_udp.build_push_data(token, self.gateway_eui(gateway), [rxpk]), gateway)
        self.counts["push_data"] += 1
        return tmst

    def broadcast(self, phy_payload: bytes) -> list[int]:
        """Every virtual gateway hears the frame, each a bit worse than the one before.
        Returns the concentrator timestamp of each gateway's copy."""
        return [self.push(phy_payload, gateway, rssi=-60.0 - 7.0 * gateway, snr=9.0 - 2.5 * gateway)
                for gateway in range(len(self._protocols))]

    def pull(self) -> None:
        for gateway in range(len(self._protocols)):
            token = int.from_bytes(os.urandom(2), "big")
            self.send_datagram(semtech_udp.build_pull_data(token, self.gateway_eui(gateway)), gateway)

    def _received(self, gateway: int, data: bytes) -> None:
        try:
            datagram = semtech_udp.parse_datagram(data)
        except Exception:  # noqa: BLE001 - the simulator counts what it cannot read
            self.counts["send_errors"] += 1
            return
        if datagram.ident == semtech_udp.Ident.PUSH_ACK:
            self.counts["push_ack"] += 1
        elif datagram.ident == semtech_udp.Ident.PULL_ACK:
            self.counts["pull_ack"] += 1
        elif datagram.ident == semtech_udp.Ident.PULL_RESP and datagram.txpk is not None:
            self.counts["pull_resp"] += 1
            self.downlinks.append(datagram.txpk)
            self.send_datagram(semtech_udp.build_tx_ack(datagram.token, self.gateway_eui(gateway)), gateway)
            payload = base64.b64decode(datagram.txpk.data)
            for sensor in self.sensors:
                if sensor.activation == "otaa" and not sensor.joined and sensor.accept(payload):
                    self.counts["joins"] += 1
                    self._join_event.set()
                    break

    # --- behaviour ---------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        while True:
            self.pull()
            await asyncio.sleep(5.0)  # the forwarder's keepalive_interval (its own timer)

    async def join_all(self) -> None:
        """Send JoinRequests for every OTAA sensor not yet joined; retry with a new DevNonce."""
        loop = asyncio.get_running_loop()
        while pending := [s for s in self.sensors if s.activation == "otaa" and not s.joined]:
            for sensor in pending:
                tmsts = self.broadcast(sensor.join_request())
                self.join_tmsts.update(enumerate(tmsts))
                self.counts["join_requests"] += 1
            deadline = loop.time() + self.join_timeout
            while any(not s.joined for s in pending) and (left := deadline - loop.time()) > 0:
                self._join_event.clear()
                try:
                    await asyncio.wait_for(self._join_event.wait(), left)
                except TimeoutError:
                    break

    def send_round(self) -> None:
        for sensor in self.sensors:
            if not sensor.joined:
                continue
            frame, values = sensor.next_frame()
            self.broadcast(frame)
            self.counts["frames"] += 1
            self.expected.append((sensor.eui_hex, values))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.join_all()
        n = 0
        while True:
            if self.rounds is not None and n >= self.rounds:
                break
            if self.duration is not None and loop.time() - started >= self.duration:
                break
            self.send_round()
            n += 1
            await asyncio.sleep(self.interval)  # the sensors' reporting interval
        self.done.set()
