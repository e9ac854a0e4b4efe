"""MQTT uplink against a real Mosquitto on loopback: plain, gzip, 3.1.1, credentials, TLS."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.batch import decode_document
from gateway.errors import UplinkUnavailable
from gateway.uplinks.mqtt import Config, load_uplink
from simulators.platform import PlatformReceiver
from tests.support.mosquitto import Broker, TlsFiles, make_tls
from tests.support.ports import free_port
from tests.support.wait import async_wait_for, wait_for
from tests.uplinks.conftest import GATEWAY, make_batch, uplink_context

MqttUplink = load_uplink()


class Tap:
    """A raw subscriber: every message as (topic, payload, content type, retained)."""

    def __init__(self, broker: Broker, topic: str = "#", **tls: str) -> None:
        self.messages: list[tuple[str, bytes, str | None, bool]] = []
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  protocol=mqtt.MQTTv5)
        self.subscribed = False
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: setattr(self, "subscribed", True)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_for(lambda: self.subscribed, what="tap subscribed")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        content_type = getattr(msg.properties, "ContentType", None) if msg.properties else None
        self.messages.append((msg.topic, msg.payload, content_type, bool(msg.retain)))

    def on(self, topic: str) -> list[tuple[str, bytes, str | None, bool]]:
        return [m for m in self.messages if m[0] == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def status_states(tap: Tap) -> list[str]:
    return [json.loads(m[1])["state"] for m in tap.on(f"edge/{GATEWAY}/status")]


async def test_plain_broker_batches_events_and_status(mosquitto: Broker, tmp_path: Path) -> None:
    tap = Tap(mosquitto)
    receiver = PlatformReceiver(mosquitto.host, mosquitto.port)
    await receiver.start()
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port), ctx)
    try:
        await uplink.start()
        assert ctx.connected
        batches = [make_batch(seq) for seq in range(1, 21)] + [make_batch(21, events=True)]
        # several in flight at once, as the runner does
        await asyncio.gather(*(uplink.send(b) for b in batches))
        await async_wait_for(lambda: receiver.report()["batches"] == 21, what="21 batches")
    finally:
        await uplink.stop()
        await receiver.stop()
    report = receiver.report()
    assert report["invalid"]["count"] == 0
    assert report["gaps"] == {}
    assert report["events"] == 1
    assert report["window_records"] == 20 * 9
    assert report["readings_covered"] == sum(
        r.count for b in batches for r in decode_document(b.payload).windows)
    batch_topic, event_topic = f"edge/{GATEWAY}/batch", f"edge/{GATEWAY}/event"
    wait_for(lambda: len(tap.on(batch_topic)) == 20 and len(tap.on(event_topic)) == 1)
    assert {m[2] for m in tap.on(batch_topic)} == {"application/json+gzip"}  # gzip by default
    assert sorted(decode_document(m[1]).seq for m in tap.on(batch_topic)) == list(range(1, 21))
    wait_for(lambda: status_states(tap) == ["online", "offline"], what="online then offline")
    assert all(m[3] is False for m in tap.on(f"edge/{GATEWAY}/status"))  # live, not replayed
    tap.close()
    # The last status is retained: a late subscriber learns the gateway is offline.
    late = Tap(mosquitto, f"edge/{GATEWAY}/status")
    wait_for(lambda: late.messages, what="retained status")
    topic, payload, _, retained = late.messages[0]
    assert retained and json.loads(payload)["state"] == "offline"
    assert json.loads(payload)["client_id"] == f"eg-{GATEWAY}"
    late.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_plain_json_payloads_when_gzip_is_off(mosquitto: Broker, tmp_path: Path, protocol: str) -> None:
    tap = Tap(mosquitto, f"city/{GATEWAY}/batch")
    receiver = PlatformReceiver(mosquitto.host, mosquitto.port, prefix="city")
    await receiver.start()
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, gzip=False,
                               protocol=protocol, topic_prefix="city"), uplink_context(tmp_path, "mqtt"))
    batch = make_batch(1)
    try:
        await uplink.send(batch)  # send() connects by itself when not started
        await async_wait_for(lambda: receiver.report()["batches"] == 1, what="gzip batch")
    finally:
        await uplink.stop()
        await receiver.stop()
    assert receiver.report()["invalid"]["count"] == 0
    wait_for(lambda: tap.messages)
    _, payload, content_type, _ = tap.messages[0]
    # gzip = false: the stored gzip payload goes out inflated, announced as plain JSON
    assert batch.payload[:2] == b"\x1f\x8b" and payload == gzip.decompress(batch.payload)
    assert content_type == ("application/json" if protocol == "5" else None)
    tap.close()


async def test_require_subscriber_keeps_batch_until_receiver_listens(
    mosquitto: Broker, tmp_path: Path
) -> None:
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, require_subscriber=True), ctx)
    await uplink.start()
    try:
        with pytest.raises(UplinkUnavailable, match="no subscriber"):
            await uplink.send(make_batch(1))
        assert ctx.counters["puback_no_subscribers"] == 1
        receiver = PlatformReceiver(mosquitto.host, mosquitto.port)
        await receiver.start()
        await uplink.send(make_batch(1))
        await async_wait_for(lambda: receiver.report()["batches"] == 1)
        await receiver.stop()
    finally:
        await uplink.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_username_password(auth_broker: Broker, tmp_path: Path, protocol: str) -> None:
    ctx = uplink_context(tmp_path, "mqtt")
    good = MqttUplink(Config(host=auth_broker.host, port=auth_broker.port, protocol=protocol,
                             username="gw-test", password="right-horse-battery"), ctx)
    await good.start()
    await good.send(make_batch(1))
    await good.stop()

    bad_ctx = uplink_context(tmp_path, "mqtt")
    bad = MqttUplink(Config(host=auth_broker.host, port=auth_broker.port, protocol=protocol,
                            username="gw-test", password="wrong"), bad_ctx)
    for _ in range(2):
        with pytest.raises(UplinkUnavailable) as refused:
            await bad.start()
    # The reason is the one clear log line the runner writes (once per distinct reason).
    # Mosquitto 2.0 refuses a wrong password with "not authorised" (MQTT 5 0x87, 3.1.1 rc 5).
    assert refused.value.reason == (
        f"mqtt connection to 127.0.0.1:{auth_broker.port} failed: broker refused the "
        "connection: not authorized (check username and password)"
    )
    assert bad_ctx.counters == {"connect_failed_not_authorized": 2}
    assert not bad_ctx.connected
    await bad.stop()


async def test_connection_refused_is_counted(tmp_path: Path) -> None:
    ctx = uplink_context(tmp_path, "mqtt")
    port = free_port()
    uplink = MqttUplink(Config(host="127.0.0.1", port=port, connect_timeout=3), ctx)
    with pytest.raises(UplinkUnavailable, match="connection refused"):
        await uplink.send(make_batch(1))
    assert ctx.counters == {"connect_failed_connection_refused": 1}


async def test_server_answering_garbage(tmp_path: Path) -> None:
    """A TCP server that answers an HTTP error instead of a CONNACK (a wrong port)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host="127.0.0.1", port=port, connect_timeout=5), ctx)
    try:
        for _ in range(2):
            with pytest.raises(UplinkUnavailable, match="without a CONNACK"):
                await uplink.start()
    finally:
        server.close()
        await server.wait_closed()
    assert ctx.counters == {"connect_failed_no_connack": 2}


async def test_tls_client_against_plain_port(mosquitto: Broker, tls_files: TlsFiles,
                                             tmp_path: Path) -> None:
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(_tls_config(mosquitto, tls_files), ctx)
    with pytest.raises(UplinkUnavailable, match="TLS handshake failed"):
        await uplink.start()
    assert ctx.counters == {"connect_failed_tls_error": 1}


def _tls_config(broker: Broker, tls: TlsFiles, **overrides: object) -> Config:
    values: dict[str, object] = dict(host=broker.host, port=broker.port, tls=True, ca_file=str(tls.ca),
                                     cert_file=str(tls.client_cert), key_file=str(tls.client_key))
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


async def test_tls_with_client_certificate(tls_broker: Broker, tls_files: TlsFiles,
                                           tmp_path: Path) -> None:
    receiver_tap = Tap(tls_broker, f"edge/{GATEWAY}/batch", ca=str(tls_files.ca),
                       cert=str(tls_files.client_cert), key=str(tls_files.client_key))
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(_tls_config(tls_broker, tls_files), ctx)
    batch = make_batch(1)
    await uplink.send(batch)
    await uplink.stop()
    wait_for(lambda: receiver_tap.messages, what="batch over TLS")
    assert receiver_tap.messages[0][1] == batch.payload
    receiver_tap.close()


async def test_tls_bad_certificate_and_missing_client_cert(
    tls_broker: Broker, tls_files: TlsFiles, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other_ca = make_tls(tmp_path / "other")
    ctx = uplink_context(tmp_path, "mqtt")
    # The broker's certificate is not signed by the CA we trust.
    wrong_ca = MqttUplink(_tls_config(tls_broker, tls_files, ca_file=str(other_ca.ca)), ctx)
    with pytest.raises(UplinkUnavailable, match="TLS certificate rejected: self-signed certificate in certificate chain"):
        await wrong_ca.start()
    assert ctx.counters == {"connect_failed_bad_certificate": 1}

    # The broker requires a client certificate and we offer none.
    ctx2 = uplink_context(tmp_path, "mqtt")
    no_cert = MqttUplink(_tls_config(tls_broker, tls_files, cert_file="", key_file=""), ctx2)
    with pytest.raises(UplinkUnavailable, match="mqtt connection to"):
        await no_cert.start()
    assert sum(ctx2.counters.values()) == 1
    # TLS 1.3: the broker checks the client certificate after the handshake and hangs up.
    assert set(ctx2.counters) <= {"connect_failed_tls_error", "connect_failed_no_connack"}


async def test_broker_outage_fails_in_flight_then_reconnects(tmp_path: Path) -> None:
    broker = Broker(workdir=tmp_path).start()
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=broker.host, port=broker.port, connect_timeout=3), ctx)
    try:
        await uplink.start()
        await uplink.send(make_batch(1))
        broker.stop()
        await async_wait_for(lambda: not ctx.connected, what="disconnect noticed")
        assert ctx.counters["disconnects"] == 1
        with pytest.raises(UplinkUnavailable):
            await uplink.send(make_batch(2))
        broker.restart()
        await uplink.start()  # what the runner does after its backoff
        await uplink.send(make_batch(2))
        assert ctx.counters["connects"] == 2
    finally:
        await uplink.stop()
        broker.stop()


async def test_last_will_says_offline_when_link_dies(mosquitto: Broker, tmp_path: Path) -> None:
    tap = Tap(mosquitto, f"edge/{GATEWAY}/status")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, keepalive=5),
                        uplink_context(tmp_path, "mqtt"))
    await uplink.start()
    wait_for(lambda: status_states(tap) == ["online"])
    # The link dies without a DISCONNECT packet (what an LTE drop looks like to the broker).
    sock = uplink._client.socket()  # noqa: SLF001 - reaching the real socket to cut it
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)
    wait_for(lambda: status_states(tap) == ["online", "offline"], what="last will")
    assert json.loads(tap.on(f"edge/{GATEWAY}/status")[-1][1])["reason"] == "connection lost"
    await uplink.stop()
    tap.close()


def test_config_validation_and_client_id() -> None:
    config = Config(cert_file="/x.pem", tls=False, require_subscriber=True, protocol="3.1.1")
    problems = config.validate()
    assert "cert_file: expected cert_file and key_file together, found cert_file='/x.pem' key_file=''" in problems
    assert "cert_file: expected tls = true when cert_file is set, found tls = false" in problems
    assert 'require_subscriber: expected protocol = "5", found "3.1.1"' in problems
    assert Config(name="mqtt").effective_client_id("gw-7") == "eg-gw-7"
    assert Config(name="backup").effective_client_id("gw-7") == "eg-gw-7-backup"
    assert Config(tls=True).effective_port() == 8883
