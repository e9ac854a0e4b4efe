"""The MQTT uplink with more than 1,024 descriptors open (a gateway serving a thousand charge
points): paho's own loop waits in select(2), which cannot take a descriptor of 1024 or more, and
reported every connection lost; the uplink's poll(2) loop connects, publishes and reconnects."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.uplinks.mqtt import Config
from gateway.uplinks.mqtt.client import MqttUplink
from simulators.platform import PlatformReceiver
from tests.support.descriptors import SELECT_CEILING, crowded_descriptors
from tests.support.mosquitto import Broker
from tests.support.wait import async_wait_for
from tests.uplinks.conftest import make_batch, uplink_context


def _take_over(broker: Broker, client_id: str) -> None:
    """Connect with the uplink's client id (MQTT 3.1.1, section 3.1.4: the broker then drops the
    older connection), over a plain socket: no select() involved."""
    ident = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(ident).to_bytes(2, "big") + ident
    body = variable + payload
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        assert sock.recv(4)[:2] == b"\x20\x02"  # CONNACK
        sock.sendall(b"\xe0\x00")  # DISCONNECT


async def test_publishes_and_reconnects_above_descriptor_1023(mosquitto: Broker, tmp_path: Path) -> None:
    # the platform's receiver (paho's select loop) connects while descriptors are still low
    receiver = PlatformReceiver(mosquitto.host, mosquitto.port)
    await receiver.start()
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, connect_timeout=5.0, ack_timeout=5.0),
                        ctx)
    try:
        with crowded_descriptors():
            await uplink.start()
            client_socket = uplink._client.socket() if uplink._client else None  # noqa: SLF001 - the point
            assert client_socket is not None and client_socket.fileno() >= SELECT_CEILING
            await asyncio.gather(*(uplink.send(make_batch(seq)) for seq in range(1, 6)))
            await async_wait_for(lambda: receiver.report()["batches"] == 5, what="5 batches")
            # the broker drops the connection; the next send opens a fresh one, still above 1023
            await asyncio.to_thread(_take_over, mosquitto, uplink.client_id)
            await async_wait_for(lambda: not ctx.connected, timeout=10, what="the drop seen")
            for seq in range(6, 9):
                await uplink.send(make_batch(seq))
            await async_wait_for(lambda: receiver.report()["batches"] == 8, timeout=20, what="8 batches")
            assert ctx.counters["connects"] == 2
            await uplink.stop()
    finally:
        await uplink.stop()
        await receiver.stop()
