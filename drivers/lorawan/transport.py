"""I/O for the LoRaWAN driver: a UDP endpoint for packet forwarders, an MQTT subscriber.

The subscriber is asyncio-native (no thread): it reads each packet with two buffered
`readexactly` calls (fixed header, body), decodes it with the pure functions of
`drivers.lorawan.mqtt_in`, and calls `on_message` directly on the event loop. Acknowledgements
are gathered and written once per event-loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from drivers.lorawan import mqtt_in
from drivers.lorawan.mqtt_in import MqttProtocolError, decode_publish, encode_puback
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
    """Subscribe to topic filters; deliver (topic, payload) on the event loop thread.

    MQTT 3.1.1, clean session, the client id as given ("" lets the broker assign one). A QoS 1
    message is acknowledged after `on_message` has returned; a QoS 2 one is delivered once per
    packet id (PUBREC, then PUBCOMP on PUBREL). A refused CONNACK raises DriverError from
    `start`; a lost connection, a malformed packet or a missing PINGRESP makes `wait_failed`
    raise DriverError. There is no reconnection here: the runtime restarts the whole driver
    with backoff.
    """

    CONNECT_TIMEOUT = 10.0  # seconds for TCP connect + CONNACK

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
        keepalive: int = 30,
    ) -> None:
        self.host, self.port, self.topics, self.qos = host, port, topics, qos
        self.client_id, self.username, self.password = client_id, username, password
        self.on_message = on_message
        self.keepalive = keepalive
        self.subscribed: asyncio.Event | None = None
        self.refused_topics: list[str] = []  # filters the broker answered 0x80 in SUBACK
        self.pingresps = 0  # PINGRESPs received (keepalive works)
        self._failed: asyncio.Future[str] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._acks = bytearray()  # PUBACK/PUBREC/PUBCOMP waiting for this loop turn's write
        self._flush_pending = False
        self._last_sent = 0.0
        self._ping_outstanding = False
        self._qos2_received: set[int] = set()  # packet ids between PUBREC and PUBREL (4.3.3)

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, wait for CONNACK, send SUBSCRIBE; `subscribed` is set on SUBACK."""
        loop = asyncio.get_running_loop()
        self.subscribed = asyncio.Event()
        self._failed = loop.create_future()
        if not self.topics:
            raise DriverError("no MQTT topic filters to subscribe to (3.8.3 needs at least one)")
        try:
            reader = await self._connect(f"MQTT broker {self.host}:{self.port}")
        except BaseException:
            await self.stop()
            raise
        self._send(mqtt_in.encode_subscribe(1, self.topics, self.qos))
        self._tasks.append(asyncio.create_task(self._read_loop(reader), name="lorawan-mqtt-read"))
        if self.keepalive > 0:
            self._tasks.append(asyncio.create_task(self._keepalive_loop(), name="lorawan-mqtt-ping"))

    async def _connect(self, where: str) -> asyncio.StreamReader:
        try:
            async with asyncio.timeout(self.CONNECT_TIMEOUT):
                reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self._send(mqtt_in.encode_connect(
                    self.client_id, keepalive=self.keepalive, clean_session=True,
                    username=self.username, password=self.password,
                ))
                first, body = await self._read_packet(reader)
        except TimeoutError:
            raise DriverError(f"no answer from {where} within {self.CONNECT_TIMEOUT:g} s") from None
        except asyncio.IncompleteReadError:
            raise DriverError(f"{where} closed the connection before CONNACK") from None
        except OSError as error:
            raise DriverError(f"cannot reach {where}: {error}") from error
        if first != mqtt_in.CONNACK << 4:
            raise MqttProtocolError(f"{where} answered CONNECT with packet type {first >> 4}")
        _, code = mqtt_in.decode_connack(body)
        if code != 0:  # 3.2.2.3
            raise DriverError(
                f"{where} refused the connection: {mqtt_in.connack_refusal(code)} (CONNACK return code {code})"
            )
        return reader

    async def wait_failed(self) -> None:
        """Return never while connected; raise DriverError when the connection is lost."""
        assert self._failed is not None
        reason = await self._failed
        raise DriverError(reason)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if not writer.is_closing():
            # messages already handed to the driver are acknowledged before leaving (3.14)
            writer.write(bytes(self._acks) + mqtt_in.encode_disconnect())
            self._acks.clear()
        writer.close()
        try:
            async with asyncio.timeout(2.0):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass  # the connection is going away either way

    # --- I/O ---------------------------------------------------------------------------------

    def _report_failure(self, reason: str) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(reason)

    def _send(self, data: bytes) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(data)
            self._last_sent = asyncio.get_running_loop().time()

    def _queue_ack(self, data: bytes) -> None:
        self._acks += data
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._flush_pending = False
        if self._acks:
            data = bytes(self._acks)
            self._acks.clear()
            self._send(data)

    @staticmethod
    async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        """One packet: fixed header (2.2), then exactly its remaining length (2.2.3) of body.
        Both reads come from the stream's buffer; the socket is read in large chunks."""
        header = await reader.readexactly(2)
        length = header[1]
        if length & 0x80:
            digit = (await reader.readexactly(1))[0]
            if digit & 0x80:  # three or four digits: rare for uplink JSON
                header += bytes((digit,))
                while header[-1] & 0x80 and len(header) < 5:
                    header += await reader.readexactly(1)
                decoded = mqtt_in.decode_remaining_length(header, 1)
                assert decoded is not None  # complete: the last byte read has no continuation bit
                length = decoded[0]
            else:  # two digits (2.2.3): 128..16383 bytes, the usual uplink
                length = (length & 0x7F) | (digit << 7)
        return header[0], (await reader.readexactly(length) if length else b"")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            await self._receive(reader)
        except asyncio.IncompleteReadError:
            self._report_failure("disconnected from the broker: connection closed")
        except OSError as error:
            self._report_failure(f"disconnected from the broker: {error}")
        except MqttProtocolError as error:
            self._report_failure(f"broker sent a bad packet: {error}")

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        read_packet = self._read_packet
        on_message = self.on_message
        queue_ack = self._queue_ack
        while True:
            first, body = await read_packet(reader)
            if first >> 4 == mqtt_in.PUBLISH:  # 3.3, the hot path
                topic, payload, qos, packet_id = decode_publish(first, body)
                if qos == 2:  # 4.3.3 method B: deliver once, PUBREC now, forget on PUBREL
                    if packet_id in self._qos2_received:
                        queue_ack(mqtt_in.encode_pubrec(packet_id))
                        continue
                    self._qos2_received.add(packet_id)
                try:
                    on_message(topic, payload)
                except Exception as error:  # noqa: BLE001 - a callback bug must not drop the link
                    loop.call_exception_handler({"message": "MQTT on_message failed", "exception": error})
                if qos == 1:
                    queue_ack(encode_puback(packet_id))  # 3.4, after the driver has the message
                elif qos == 2:
                    queue_ack(mqtt_in.encode_pubrec(packet_id))
                continue
            kind, value = mqtt_in.decode(first, body)
            if kind == mqtt_in.SUBACK:
                assert isinstance(value, tuple)
                self.refused_topics = [t for t, c in zip(self.topics, value[1], strict=False) if c == 0x80]
                assert self.subscribed is not None
                self.subscribed.set()
            elif kind == mqtt_in.PINGRESP:
                self._ping_outstanding = False
                self.pingresps += 1
            elif kind == mqtt_in.PUBREL:  # 3.6 -> 3.7 PUBCOMP
                assert isinstance(value, int)
                self._qos2_received.discard(value)
                queue_ack(mqtt_in.encode_pubcomp(value))
            elif kind == mqtt_in.CONNACK:
                raise MqttProtocolError("a second CONNACK (3.2)")
            # PUBACK/PUBREC/PUBCOMP answer publishes; this client publishes nothing: ignored.

    async def _keepalive_loop(self) -> None:
        """3.1.2.10: a control packet at least every `keepalive` seconds; PINGREQ (3.12) when
        nothing else went out. No PINGRESP (3.13) by the next one: the link is dead."""
        loop = asyncio.get_running_loop()
        while True:
            due = self._last_sent + self.keepalive
            now = loop.time()
            if now < due:
                await asyncio.sleep(due - now)
                continue
            if self._ping_outstanding:
                self._report_failure(f"no PINGRESP from the broker within {self.keepalive} s")
                return
            self._ping_outstanding = True
            self._send(mqtt_in.encode_pingreq())
