"""The floors of `benchmarks.peer`: a bare subscriber (QoS 1, the callback only counts) receiving
the same uplinks. Any gateway built on the same client pays at least this per reading before
doing anything with it.

    python -m benchmarks.peer_support.bare_subscriber --client paho|asyncio --port P --topic T --count N

- `paho`: paho-mqtt's client on its network thread (what ThingsBoard IoT Gateway's MQTT
  connector uses, and the lorawan driver used before its own asyncio subscriber,
  drivers/lorawan/mqtt_in.py, replaced it on the input side).
- `asyncio`: a minimal MQTT 3.1.1 subscriber written on an asyncio Protocol (OASIS MQTT 3.1.1,
  sections 2.2 fixed header, 3.1 CONNECT, 3.3 PUBLISH, 3.4 PUBACK, 3.8 SUBSCRIBE): it parses every
  complete packet in each chunk the socket delivers and answers them with one write of PUBACKs.
  It exists to show what the receive path can cost, not as a client for the gateway.

Prints "subscribed" once subscribed, then "done" after N messages from devices other than the
probe, and exits when its standard input closes (so the parent reads its CPU time first).
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

from benchmarks.peer_support.workload import PROBE_EUI

_PROBE = f"/device/{PROBE_EUI}/".encode()


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    """Fixed header (section 2.2): type/flags byte, remaining length as a base-128 varint."""
    length, encoded = len(body), bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


class _MqttSubscriber(asyncio.Protocol):
    def __init__(self, client_id: str, topic: str, on_publish: Callable[[bytes, bytes], None]) -> None:
        self.client_id, self.topic, self.on_publish = client_id, topic, on_publish
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.subscribed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream connection's transport is always an asyncio.Transport (it has write())
        self.transport = cast(asyncio.Transport, transport)
        # CONNECT (3.1): protocol name, level 4, clean session, keepalive 60 s, client id
        connect = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _string(self.client_id)
        self.transport.write(_packet(0x10, connect))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        packets, consumed = split_packets(buffer)
        acks = bytearray()
        for first, start, stop in packets:
            kind = first >> 4
            if kind == 3:  # PUBLISH (3.3): topic, packet id when QoS > 0, payload
                topic_len = (buffer[start] << 8) | buffer[start + 1]
                topic = bytes(buffer[start + 2 : start + 2 + topic_len])
                body = start + 2 + topic_len
                if (first >> 1) & 3:
                    acks += b"\x40\x02" + buffer[body : body + 2]  # PUBACK (3.4)
                    body += 2
                self.on_publish(topic, bytes(buffer[body:stop]))
            elif kind == 2:  # CONNACK: SUBSCRIBE (3.8), packet id 1, QoS 1
                assert self.transport is not None
                self.transport.write(_packet(0x82, struct.pack("!H", 1) + _string(self.topic) + b"\x01"))
            elif kind == 9 and not self.subscribed.done():  # SUBACK
                self.subscribed.set_result(None)
        del buffer[:consumed]
        if acks and self.transport is not None:
            self.transport.write(bytes(acks))


def split_packets(buffer: bytes | bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """Complete MQTT packets at the start of `buffer`: ([(first byte, body start, body end)],
    bytes consumed). An incomplete packet at the end stays for the next chunk."""
    packets: list[tuple[int, int, int]] = []
    offset, end = 0, len(buffer)
    while offset < end:
        length = shift = 0
        pos = offset + 1
        while True:
            if pos >= end:
                return packets, offset  # remaining length not complete yet
            byte = buffer[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length (more than 4 bytes)")
        if pos + length > end:
            return packets, offset
        packets.append((buffer[offset], pos, pos + length))
        offset = pos + length
    return packets, offset


async def _run_asyncio(args: argparse.Namespace) -> bool:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    received = 0

    def on_publish(topic: bytes, payload: bytes) -> None:
        nonlocal received
        if _PROBE in topic:
            return
        received += 1
        if received >= args.count and not done.done():
            done.set_result(None)

    transport, protocol = await loop.create_connection(
        lambda: _MqttSubscriber("peer-bench-bare-asyncio", args.topic, on_publish), args.host, args.port)
    await protocol.subscribed
    print("subscribed", flush=True)
    try:
        await asyncio.wait_for(done, args.timeout)
    except TimeoutError:
        print(f"timeout after {received} messages", flush=True)
        return False
    finally:
        transport.write(b"\xe0\x00")  # DISCONNECT
        transport.close()
    print("done", flush=True)
    return True


def _run_paho(args: argparse.Namespace) -> bool:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    received = 0

    def on_connect(client: mqtt.Client, *rest: Any) -> None:
        client.subscribe(args.topic, qos=1)

    def on_subscribe(*rest: Any) -> None:
        print("subscribed", flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        if _PROBE in message._topic:  # the raw topic bytes: no decoding beyond paho's own
            return
        received += 1
        if received >= args.count:
            done.set()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id="peer-bench-bare-paho", protocol=mqtt.MQTTv311)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    ok = done.wait(args.timeout)
    print("done" if ok else f"timeout after {received} messages", flush=True)
    client.disconnect()
    client.loop_stop()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_support.bare_subscriber")
    parser.add_argument("--client", choices=("paho", "asyncio"), default="paho")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    ok = asyncio.run(_run_asyncio(args)) if args.client == "asyncio" else _run_paho(args)
    sys.stdin.read()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
