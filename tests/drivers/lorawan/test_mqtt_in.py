"""The network-server MQTT input: the pure packet codec (drivers/lorawan/mqtt_in.py) and the
asyncio subscriber (drivers/lorawan/transport.py MqttSubscriber) against a real Mosquitto.

Vectors come from OASIS "MQTT Version 3.1.1" (mqtt-v3.1.1-os, 29 October 2014,
https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html); each names its section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan import mqtt_in
from drivers.lorawan.mqtt_in import MqttProtocolError
from drivers.lorawan.transport import MqttSubscriber
from gateway.errors import DriverError
from tests.support.mosquitto import Broker
from tests.support.ports import free_port
from tests.support.wait import async_wait_for

# --- remaining length (2.2.3, Table 2.4 "Size of Remaining Length field") --------------------

REMAINING_LENGTH = [
    # (value, encoding, source)
    (0, "00", "2.2.3 Table 2.4, one digit, lower bound"),
    (127, "7f", "2.2.3 Table 2.4, one digit, upper bound"),
    (128, "8001", "2.2.3 Table 2.4, two digits, lower bound"),
    (16_383, "ff7f", "2.2.3 Table 2.4, two digits, upper bound"),
    (16_384, "808001", "2.2.3 Table 2.4, three digits, lower bound"),
    (2_097_151, "ffff7f", "2.2.3 Table 2.4, three digits, upper bound"),
    (2_097_152, "80808001", "2.2.3 Table 2.4, four digits, lower bound"),
    (268_435_455, "ffffff7f", "2.2.3 Table 2.4, four digits, upper bound"),
]


@pytest.mark.parametrize(("value", "encoding", "source"), REMAINING_LENGTH)
def test_remaining_length_table(value: int, encoding: str, source: str) -> None:
    raw = bytes.fromhex(encoding)
    assert mqtt_in.encode_remaining_length(value) == raw, source
    assert mqtt_in.decode_remaining_length(raw) == (value, len(raw)), source
    assert mqtt_in.decode_remaining_length(b"\x30" + raw + b"rest", 1) == (value, 1 + len(raw))
    assert mqtt_in.decode_remaining_length(raw[:-1]) is None  # incomplete: wait for more bytes


def test_remaining_length_limits() -> None:
    with pytest.raises(MqttProtocolError):
        mqtt_in.decode_remaining_length(bytes.fromhex("ffffffff7f"))  # a fifth digit
    for bad in (-1, 268_435_456):
        with pytest.raises(ValueError):
            mqtt_in.encode_remaining_length(bad)


@given(st.integers(0, mqtt_in.MAX_REMAINING_LENGTH))
def test_remaining_length_round_trip(value: int) -> None:
    raw = mqtt_in.encode_remaining_length(value)
    assert mqtt_in.decode_remaining_length(raw) == (value, len(raw))


# --- packets ------------------------------------------------------------------------------------


def test_connect_matches_the_spec_example() -> None:
    # 3.1.2.10 Figure 3.6, non-normative variable header: "MQTT", level 4, connect flags 0xCE,
    # keep alive 10. 0xCE also sets Will Flag/Will QoS 1 (0x0C), which this client never sends:
    # with those masked, user name + password + clean session = 0xC2.
    spec_variable_header = bytes.fromhex("00044d5154540" "4ce000a")
    expected = spec_variable_header[:7] + bytes([0xCE & ~0x2C]) + spec_variable_header[8:]
    raw = mqtt_in.encode_connect("gw", keepalive=10, username="u", password="p")
    assert raw[0] == 0x10  # 2.2.1: CONNECT, flags 0 (2.2.2)
    length, start = mqtt_in.decode_remaining_length(raw, 1) or (0, 0)
    body = raw[start:]
    assert len(body) == length
    assert body[:10] == expected
    assert body[10:] == b"\x00\x02gw\x00\x01u\x00\x01p"  # 3.1.3: client id, user name, password


def test_connect_flags() -> None:
    plain = mqtt_in.encode_connect("", keepalive=30)
    assert plain == bytes.fromhex("100c00044d51545404020" "01e0000")  # clean session, empty id
    # a password only goes with a user name (3.1.2.9); no user name: neither flag
    assert mqtt_in.encode_connect("", keepalive=30, password="p") == plain
    assert mqtt_in.encode_connect("", keepalive=30, username="u")[9] == 0x82


def test_publish_variable_header_example() -> None:
    # 3.3.2.3 Figure 3.12: topic "a/b", packet identifier 10
    body = bytes.fromhex("0003612f62000a") + b"payload"
    assert mqtt_in.decode_publish(0x32, body) == ("a/b", b"payload", 1, 10)
    assert mqtt_in.encode_publish("a/b", b"payload", qos=1, packet_id=10) == bytes([0x32, len(body)]) + body
    # QoS 0 has no packet identifier (3.3.2.2)
    assert mqtt_in.decode_publish(0x30, bytes.fromhex("0003612f62") + b"x") == ("a/b", b"x", 0, 0)


def test_acknowledgements_and_pings() -> None:
    assert mqtt_in.encode_puback(10) == bytes.fromhex("4002000a")  # 3.4
    assert mqtt_in.encode_pubrec(10) == bytes.fromhex("5002000a")  # 3.5
    assert mqtt_in.encode_pubcomp(10) == bytes.fromhex("7002000a")  # 3.7
    assert mqtt_in.encode_pingreq() == bytes.fromhex("c000")  # 3.12
    assert mqtt_in.encode_disconnect() == bytes.fromhex("e000")  # 3.14
    assert mqtt_in.decode(0xD0, b"") == (mqtt_in.PINGRESP, None)  # 3.13
    assert mqtt_in.decode(0x62, b"\x00\x0a") == (mqtt_in.PUBREL, 10)  # 3.6: flags 0010
    with pytest.raises(MqttProtocolError):
        mqtt_in.decode(0x60, b"\x00\x0a")  # PUBREL without its reserved flag bit (3.6.1)


def test_subscribe_and_suback_examples() -> None:
    # 3.8.3 Figure 3.21 payload: "a/b" requested QoS 1 (one QoS for every filter here)
    raw = mqtt_in.encode_subscribe(10, ["a/b"], 1)
    assert raw == bytes.fromhex("8208000a0003612f6201")  # 3.8.1: flags 0010
    # 3.9.3 Figure 3.26: granted QoS 0, 1, 2 and Failure
    assert mqtt_in.decode_suback(bytes.fromhex("000a00010280")) == (10, [0, 1, 2, 0x80])
    with pytest.raises(MqttProtocolError):
        mqtt_in.decode_suback(bytes.fromhex("000a03"))  # 3 is reserved (3.9.3)


@pytest.mark.parametrize(("code", "text"), [
    (1, "unacceptable protocol version"),
    (2, "client identifier rejected"),
    (3, "server unavailable"),
    (4, "bad user name or password"),
    (5, "not authorized"),
    (6, "reserved return code 6"),
])
def test_connack_return_codes(code: int, text: str) -> None:
    # 3.2.2.3 Table 3.1 "Connect Return code values"
    assert mqtt_in.decode_connack(bytes([0, code])) == (False, code)
    assert text in mqtt_in.connack_refusal(code)


def test_connack_accepted_and_malformed() -> None:
    assert mqtt_in.decode(0x20, b"\x01\x00") == (mqtt_in.CONNACK, (True, 0))  # session present
    for body in (b"", b"\x00", b"\x02\x00", b"\x00\x00\x00"):
        with pytest.raises(MqttProtocolError):
            mqtt_in.decode_connack(body)


def test_split_packet_waits_for_complete_packets() -> None:
    whole = mqtt_in.encode_publish("t", b"x" * 200, qos=1, packet_id=7) + mqtt_in.encode_pingreq()
    first = len(whole) - 2
    for cut in range(first):
        assert mqtt_in.split_packet(whole[:cut]) is None
    got = mqtt_in.split_packet(whole)
    assert got is not None and got[2] == first
    assert mqtt_in.decode_publish(got[0], got[1]) == ("t", b"x" * 200, 1, 7)


@given(st.text(max_size=40), st.binary(max_size=300), st.sampled_from([0, 1, 2]),
       st.integers(1, 0xFFFF), st.booleans())
def test_publish_round_trip(topic: str, payload: bytes, qos: int, packet_id: int, retain: bool) -> None:
    raw = mqtt_in.encode_publish(topic, payload, qos, packet_id, retain=retain)
    got = mqtt_in.split_packet(raw)
    assert got is not None and got[2] == len(raw)
    assert mqtt_in.decode(got[0], got[1]) == (mqtt_in.PUBLISH, (topic, payload, qos, packet_id if qos else 0))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_the_protocol_error(data: bytes) -> None:
    try:
        while True:
            got = mqtt_in.split_packet(data)
            if got is None:
                return
            mqtt_in.decode(got[0], got[1])
            data = data[got[2]:]
    except MqttProtocolError:
        pass


@given(st.integers(0, 255), st.binary(max_size=40))
def test_arbitrary_packets_raise_only_the_protocol_error(first_byte: int, body: bytes) -> None:
    with contextlib.suppress(MqttProtocolError):
        mqtt_in.decode(first_byte, body)


# --- the subscriber against Mosquitto ---------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))


def _subscriber(broker: Broker, inbox: Inbox, **overrides: object) -> MqttSubscriber:
    options: dict[str, object] = dict(host=broker.host, port=broker.port, topics=["up/#"], qos=1,
                                      client_id="lora-in", username="", password="", on_message=inbox)
    options.update(overrides)
    return MqttSubscriber(**options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _running(subscriber: MqttSubscriber) -> AsyncIterator[MqttSubscriber]:
    await subscriber.start()
    try:
        await async_wait_for(lambda: subscriber.subscribed is not None and subscriber.subscribed.is_set(),
                             what="SUBACK")
        yield subscriber
    finally:
        await subscriber.stop()


def _publish(broker: Broker, messages: list[tuple[str, bytes, int]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload, qos in messages:
            client.publish(topic, payload, qos=qos).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_qos1_messages_are_delivered_and_acknowledged(mosquitto: Broker) -> None:
    inbox = Inbox()
    async with _running(_subscriber(mosquitto, inbox)) as subscriber:
        big = bytes(range(256)) * 80  # 20 kB: a three-byte remaining length
        sent = [(f"up/dev{i}", b"reading %d" % i, 1) for i in range(50)] + [("up/big", big, 1), ("other", b"x", 1)]
        await asyncio.to_thread(_publish, mosquitto, sent)
        await async_wait_for(lambda: len(inbox.messages) >= 51, what="51 messages")
        assert inbox.messages == [(t, p) for t, p, _ in sent[:51]]  # in order, "other" not subscribed
        assert subscriber.refused_topics == []
        # the broker saw our acknowledgements (Mosquitto logs each received PUBACK)
        await async_wait_for(lambda: mosquitto.log_path.read_text().count("Received PUBACK from lora-in") >= 51,
                             what="51 PUBACKs logged by the broker")


async def test_qos2_message_is_delivered_once(mosquitto: Broker) -> None:
    inbox = Inbox()
    async with _running(_subscriber(mosquitto, inbox, qos=2)):
        await asyncio.to_thread(_publish, mosquitto, [("up/q2", b"exactly once", 2)])
        # 4.3.3: PUBLISH -> our PUBREC -> broker's PUBREL -> our PUBCOMP (Mosquitto logs each)
        await async_wait_for(lambda: "Received PUBCOMP from lora-in (Mid: 1" in mosquitto.log_path.read_text(),
                             what="the QoS 2 exchange completed")
        assert "Received PUBREC from lora-in (Mid: 1)" in mosquitto.log_path.read_text()
        await async_wait_for(lambda: inbox.messages == [("up/q2", b"exactly once")], what="one delivery")


async def test_wrong_password_is_a_clear_driver_error(tmp_path: Path) -> None:
    broker = Broker(workdir=tmp_path, users={"gateway": "right"}).start()
    try:
        subscriber = _subscriber(broker, Inbox(), username="gateway", password="wrong")
        with pytest.raises(DriverError) as caught:
            await subscriber.start()
        # Mosquitto 2 answers a wrong password with return code 5 (3.2.2.3)
        assert str(caught.value) == (f"MQTT broker 127.0.0.1:{broker.port} refused the connection: "
                                     "not authorized (CONNACK return code 5)")
        # the right password works
        async with _running(_subscriber(broker, Inbox(), username="gateway", password="right")) as ok:
            assert ok.subscribed is not None and ok.subscribed.is_set()
    finally:
        broker.stop()


async def test_broker_stopped_is_a_driver_error(mosquitto: Broker) -> None:
    async with _running(_subscriber(mosquitto, Inbox())) as subscriber:
        mosquitto.stop()
        with pytest.raises(DriverError, match="disconnected from the broker"):
            await asyncio.wait_for(subscriber.wait_failed(), 10)


async def test_unreachable_broker_is_a_driver_error() -> None:
    subscriber = MqttSubscriber(host="127.0.0.1", port=free_port(), topics=["#"], qos=1, client_id="",
                                username="", password="", on_message=Inbox())
    with pytest.raises(DriverError, match="cannot reach MQTT broker"):
        await subscriber.start()


async def test_keepalive_pings_keep_an_idle_connection(mosquitto: Broker) -> None:
    # Keep alive 1 s: without PINGREQs Mosquitto drops the client after 1.5 s of silence (3.1.2.10).
    inbox = Inbox()
    async with _running(_subscriber(mosquitto, inbox, keepalive=1)) as subscriber:
        await async_wait_for(lambda: subscriber.pingresps >= 3, timeout=10, what="three PINGRESPs")
        assert subscriber._failed is not None and not subscriber._failed.done()
        await asyncio.to_thread(_publish, mosquitto, [("up/late", b"still here", 1)])
        await async_wait_for(lambda: inbox.messages == [("up/late", b"still here")], what="delivery after idling")
        log = mosquitto.log_path.read_text()
        assert log.count("Received PINGREQ from lora-in") >= 3
        assert "exceeded timeout" not in log


async def test_empty_client_id_gets_one_from_the_broker(mosquitto: Broker) -> None:
    inbox = Inbox()
    async with _running(_subscriber(mosquitto, inbox, client_id="", qos=0)):
        await asyncio.to_thread(_publish, mosquitto, [("up/q0", b"zero", 0)])
        await async_wait_for(lambda: inbox.messages == [("up/q0", b"zero")], what="QoS 0 delivery")


async def test_no_topics_is_a_driver_error() -> None:
    subscriber = MqttSubscriber(host="127.0.0.1", port=free_port(), topics=[], qos=1, client_id="",
                                username="", password="", on_message=Inbox())
    with pytest.raises(DriverError, match="no MQTT topic filters"):
        await subscriber.start()


@contextlib.asynccontextmanager
async def _scripted_broker(answers: list[bytes]) -> AsyncIterator[int]:
    """A loopback TCP peer that reads the CONNECT, then writes `answers` (bad brokers)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)  # the CONNECT's first bytes are enough here
        for answer in answers:
            writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_malformed_connack_is_a_driver_error() -> None:
    async with _scripted_broker([b"\x20\x03\x00\x00\x00"]) as port:  # CONNACK body of 3 bytes (3.2)
        subscriber = MqttSubscriber(host="127.0.0.1", port=port, topics=["#"], qos=1, client_id="x",
                                    username="", password="", on_message=Inbox())
        with pytest.raises(DriverError, match="CONNACK with a 3-byte body"):
            await subscriber.start()


async def test_bad_packet_after_connect_is_a_driver_error() -> None:
    async with _scripted_broker([b"\x20\x02\x00\x00", b"\xf0\x00"]) as port:  # type 15 is reserved
        subscriber = MqttSubscriber(host="127.0.0.1", port=port, topics=["#"], qos=1, client_id="x",
                                    username="", password="", on_message=Inbox())
        await subscriber.start()
        try:
            with pytest.raises(DriverError, match="broker sent a bad packet: unexpected packet type 15"):
                await asyncio.wait_for(subscriber.wait_failed(), 5)
        finally:
            await subscriber.stop()
