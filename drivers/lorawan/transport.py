"""I/O for the LoRaWAN driver: a UDP endpoint for packet forwarders.

The network-server MQTT input is the gateway's shared subscriber (gateway/mqtt/subscriber.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.errors import DriverError

__all__ = ["UdpEndpoint", "open_udp"]


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

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
