"""The network-server MQTT input: the shared subscriber (gateway/mqtt/subscriber.py, gmqtt)
against a real Mosquitto: QoS 0/1, credentials, TLS with a CA and server certificate made by
openssl in the test, mTLS, a persistent session, and the errors a driver turns into restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.errors import DriverError
from gateway.mqtt import TlsFileError, tls_context
from gateway.mqtt.subscriber import MqttSubscriber, SubscriberSettings
from tests.support.mosquitto import Broker, TlsFiles, make_tls
from tests.support.ports import free_port
from tests.support.wait import async_wait_for


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _settings(broker: Broker, **overrides: object) -> SubscriberSettings:
    options: dict[str, object] = dict(host=broker.host, port=broker.port, topics=["up/#"], qos=1,
                                      client_id="lora-in", connect_timeout=5.0)
    options.update(overrides)
    return SubscriberSettings(**options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _running(subscriber: MqttSubscriber) -> AsyncIterator[MqttSubscriber]:
    await subscriber.start()
    try:
        await asyncio.wait_for(subscriber.subscribed.wait(), 10)
        yield subscriber
    finally:
        await subscriber.stop()


def _publish(broker: Broker, messages: list[tuple[str, bytes, int]], tls: TlsFiles | None = None,
             **auth: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    if tls is not None:
        client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
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
    async with _running(MqttSubscriber(_settings(mosquitto), inbox)) as subscriber:
        big = bytes(range(256)) * 80  # 20 kB: a three-byte remaining length
        sent = [(f"up/dev{i}", b"reading %d" % i, 1) for i in range(50)] + [("up/big", big, 1), ("other", b"x", 1)]
        await asyncio.to_thread(_publish, mosquitto, sent)
        await async_wait_for(lambda: len(inbox.messages) == 51, what="51 messages")
        assert inbox.messages == [(t, p) for t, p, _ in sent[:51]]  # in order, "other" not subscribed
        assert subscriber.refused_topics == []
        # the broker saw our acknowledgements (Mosquitto logs each received PUBACK)
        await async_wait_for(lambda: mosquitto.log_path.read_text().count("Received PUBACK from lora-in") == 51,
                             what="51 PUBACKs logged by the broker")


async def test_qos0_and_a_clean_session(mosquitto: Broker) -> None:
    inbox = Inbox()
    settings = _settings(mosquitto, qos=0, clean_session=True, client_id="")
    async with _running(MqttSubscriber(settings, inbox)):
        await asyncio.to_thread(_publish, mosquitto, [("up/q0", b"zero", 0)])
        await async_wait_for(lambda: inbox.messages == [("up/q0", b"zero")], what="QoS 0 delivery")


def test_persistent_session_needs_a_client_id(mosquitto: Broker) -> None:
    with pytest.raises(ValueError, match="needs a client id"):
        MqttSubscriber(_settings(mosquitto, client_id=""), Inbox())


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_persistent_session_keeps_what_was_published_while_away(mosquitto: Broker,
                                                                      protocol: str) -> None:
    inbox = Inbox()
    settings = _settings(mosquitto, protocol=protocol, client_id=f"lora-in-{protocol}")
    async with _running(MqttSubscriber(settings, inbox)) as first:
        assert not first.session_present
    # away: the broker queues these for the session
    away = [(f"up/away{i}", b"while away %d" % i, 1) for i in range(20)]
    await asyncio.to_thread(_publish, mosquitto, away)
    async with _running(MqttSubscriber(settings, inbox)) as again:
        assert again.session_present
        await asyncio.to_thread(_publish, mosquitto, [("up/marker", b"after", 1)])
        await async_wait_for(lambda: ("up/marker", b"after") in inbox.messages, what="the marker")
    # the queued ones came before the marker, each exactly once
    assert inbox.messages == [(t, p) for t, p, _ in away] + [("up/marker", b"after")]

    # a clean session forgets: nothing published while away arrives
    clean = Inbox()
    async with _running(MqttSubscriber(_settings(mosquitto, clean_session=True, client_id="c1"),
                                       clean)):
        pass
    await asyncio.to_thread(_publish, mosquitto, [("up/lost", b"lost", 1)])
    async with _running(MqttSubscriber(_settings(mosquitto, clean_session=True, client_id="c1"),
                                       clean)):
        await asyncio.to_thread(_publish, mosquitto, [("up/marker", b"after", 1)])
        await async_wait_for(lambda: clean.messages, what="the marker")
    assert clean.messages == [("up/marker", b"after")]


async def test_wrong_password_is_a_clear_driver_error(tmp_path: Path) -> None:
    broker = Broker(workdir=tmp_path, users={"gateway": "right"}).start()
    try:
        subscriber = MqttSubscriber(_settings(broker, username="gateway", password="wrong"), Inbox())
        with pytest.raises(DriverError) as caught:
            await subscriber.start()
        # Mosquitto 2 answers a wrong password with return code 5 (MQTT 3.1.1 section 3.2.2.3)
        assert str(caught.value) == (f"MQTT broker 127.0.0.1:{broker.port} refused the connection: "
                                     "code 5 (Connection Refused: not authorised)")
        inbox = Inbox()
        async with _running(MqttSubscriber(_settings(broker, username="gateway", password="right"),
                                           inbox)):
            await asyncio.to_thread(_publish, broker, [("up/a", b"1", 1)], username="gateway",
                                    password="right")
            await async_wait_for(lambda: inbox.messages == [("up/a", b"1")], what="delivery")
    finally:
        broker.stop()


async def test_tls_with_ca_username_and_password(tmp_path: Path, tls_files: TlsFiles) -> None:
    broker = Broker(workdir=tmp_path, tls=tls_files, users={"gateway": "right"}).start()
    try:
        inbox = Inbox()
        settings = _settings(broker, tls=True, ca_file=str(tls_files.ca), username="gateway",
                             password="right")
        async with _running(MqttSubscriber(settings, inbox)):
            await asyncio.to_thread(_publish, broker, [("up/tls", b"secret", 1)], tls=tls_files,
                                    username="gateway", password="right")
            await async_wait_for(lambda: inbox.messages == [("up/tls", b"secret")], what="delivery")
        # the CONNECT (and so the password) travelled inside TLS: a plain client gets nowhere
        plain = MqttSubscriber(_settings(broker, username="gateway", password="right"), Inbox())
        with pytest.raises(DriverError, match="closed the connection before CONNACK|no answer"):
            await plain.start()
    finally:
        broker.stop()


async def test_mutual_tls(tmp_path: Path, tls_files: TlsFiles) -> None:
    broker = Broker(workdir=tmp_path, tls=tls_files, require_certificate=True).start()
    try:
        inbox = Inbox()
        settings = _settings(broker, tls=True, ca_file=str(tls_files.ca),
                             cert_file=str(tls_files.client_cert), key_file=str(tls_files.client_key))
        async with _running(MqttSubscriber(settings, inbox)):
            await asyncio.to_thread(_publish, broker, [("up/mtls", b"1", 1)], tls=tls_files)
            await async_wait_for(lambda: inbox.messages == [("up/mtls", b"1")], what="delivery")
        without = MqttSubscriber(_settings(broker, tls=True, ca_file=str(tls_files.ca)), Inbox())
        with pytest.raises(DriverError, match="TLS handshake failed|closed the connection"):
            await without.start()
    finally:
        broker.stop()


async def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path,
                                                                tls_files: TlsFiles) -> None:
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other")
    (tmp_path / "broker").mkdir()
    broker = Broker(workdir=tmp_path / "broker", tls=tls_files).start()
    try:
        subscriber = MqttSubscriber(_settings(broker, tls=True, ca_file=str(other.ca)), Inbox())
        with pytest.raises(DriverError, match="TLS certificate rejected: .*self[- ]signed|"
                                              "TLS certificate rejected: unable to get local issuer"):
            await subscriber.start()
    finally:
        broker.stop()


def test_tls_file_errors_name_the_file(tmp_path: Path, tls_files: TlsFiles) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TlsFileError) as caught:
        tls_context(ca_file=str(missing), keys=("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"))
    assert str(caught.value) == f"mqtt_ca_file {str(missing)!r}: no such file"
    assert caught.value.path == str(missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsFileError, match=f"ca_file '{junk}': not a PEM CA bundle"):
        tls_context(ca_file=str(junk))
    with pytest.raises(TlsFileError, match=f"key_file '{tls_files.server_key}': does not match "
                                           f"cert_file '{tls_files.client_cert}'"):
        tls_context(cert_file=str(tls_files.client_cert), key_file=str(tls_files.server_key))
    with pytest.raises(TlsFileError, match="is a directory"):
        tls_context(ca_file=str(tmp_path))
    assert tls_context(ca_file=str(tls_files.ca), cert_file=str(tls_files.client_cert),
                       key_file=str(tls_files.client_key)).check_hostname
    assert not tls_context(ca_file=str(tls_files.ca), insecure=True).check_hostname


async def test_missing_tls_file_fails_start_naming_it(mosquitto: Broker, tmp_path: Path) -> None:
    settings = _settings(mosquitto, tls=True, ca_file=str(tmp_path / "ca.pem"))
    with pytest.raises(TlsFileError, match=r"ca_file '.*/ca\.pem': no such file"):
        await MqttSubscriber(settings, Inbox()).start()


async def test_broker_stopped_is_a_driver_error(mosquitto: Broker) -> None:
    async with _running(MqttSubscriber(_settings(mosquitto), Inbox())) as subscriber:
        mosquitto.stop()
        with pytest.raises(DriverError, match="disconnected from the MQTT broker"):
            await asyncio.wait_for(subscriber.wait_failed(), 10)


async def test_unreachable_broker_is_a_driver_error() -> None:
    settings = SubscriberSettings(host="127.0.0.1", port=free_port(), topics=["#"], client_id="x")
    with pytest.raises(DriverError, match="cannot reach MQTT broker"):
        await MqttSubscriber(settings, Inbox()).start()


async def test_no_topics_is_a_driver_error() -> None:
    settings = SubscriberSettings(host="127.0.0.1", port=free_port(), topics=[], client_id="x")
    with pytest.raises(DriverError, match="no MQTT topic filters"):
        await MqttSubscriber(settings, Inbox()).start()


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


async def test_a_peer_that_is_no_mqtt_broker_is_a_driver_error() -> None:
    async with _scripted_broker([b"HTTP/1.1 400 Bad Request\r\n\r\n"]) as port:
        settings = SubscriberSettings(host="127.0.0.1", port=port, topics=["#"], client_id="x",
                                      connect_timeout=2.0)
        with pytest.raises(DriverError, match="no answer from|closed the connection"):
            await MqttSubscriber(settings, Inbox()).start()
