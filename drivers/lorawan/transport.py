"""I/O for the LoRaWAN driver: a UDP endpoint for packet forwarders, an MQTT subscriber.

paho-mqtt runs its network loop in its own thread (`loop_start`); every message and every
connection change is handed to the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.errors import DriverError

__all__ = ["MqttSubscriber", "UdpEndpoint", "open_udp"]


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a forwarder that went away: not fatal for the listener.
        self.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)


async def open_udp(host: str, port: int, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await loop.create_datagram_endpoint(
            lambda: UdpEndpoint(on_datagram), local_addr=(host, port)
        )
    except OSError as error:
        raise DriverError(f"cannot listen on udp {host}:{port}: {error.strerror or error}") from error
    return protocol


class MqttSubscriber:
    """Subscribe to topic filters; deliver (topic, payload) on the event loop thread."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: list[str],
        qos: int,
        client_id: str,
        username: str,
        password: str,
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self.host, self.port, self.topics, self.qos = host, port, topics, qos
        self.client_id, self.username, self.password = client_id, username, password
        self.on_message = on_message
        self.client: Any = None
        self.subscribed: asyncio.Event | None = None
        self._failed: asyncio.Future[str] | None = None

    async def start(self) -> None:
        import paho.mqtt.client as mqtt

        loop = asyncio.get_running_loop()
        self.subscribed = asyncio.Event()
        self._failed = loop.create_future()
        failed = self._failed
        subscribed = self.subscribed

        def report_failure(reason: str) -> None:
            if not failed.done():
                failed.set_result(reason)

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
        )
        if self.username:
            client.username_pw_set(self.username, self.password or None)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if reason.is_failure:
                loop.call_soon_threadsafe(report_failure, f"broker refused the connection: {reason}")
                return
            c.subscribe([(topic, self.qos) for topic in self.topics])

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
            loop.call_soon_threadsafe(subscribed.set)

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            loop.call_soon_threadsafe(self.on_message, message.topic, message.payload)

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            # Leave reconnection to the runtime's backoff: the whole driver restarts.
            loop.call_soon_threadsafe(report_failure, f"disconnected from the broker: {reason}")

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        self.client = client
        try:
            await asyncio.to_thread(client.connect, self.host, self.port, 30)
        except OSError as error:
            raise DriverError(f"cannot reach MQTT broker {self.host}:{self.port}: {error}") from error
        client.loop_start()

    async def wait_failed(self) -> None:
        """Return never while connected; raise DriverError when the connection is lost."""
        assert self._failed is not None
        reason = await self._failed
        raise DriverError(reason)

    async def stop(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        client.on_disconnect = None
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
