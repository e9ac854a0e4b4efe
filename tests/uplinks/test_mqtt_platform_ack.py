"""End-to-end acknowledgement (`ack = "platform"`): the MQTT uplink against a real Mosquitto and
the platform receiver, in process. The broker-restart run with the gateway as a subprocess is
tests/uplinks/test_platform_ack_e2e.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.errors import UplinkUnavailable
from gateway.uplinks.mqtt import Config, load_uplink
from gateway.uplinks.mqtt.client import parse_platform_ack
from simulators.platform import Ledger, PlatformReceiver
from tests.support.mosquitto import Broker
from tests.support.wait import async_wait_for
from tests.uplinks.conftest import GATEWAY, make_batch, uplink_context

MqttUplink = load_uplink()
ACK_TOPIC = f"edge/{GATEWAY}/ack"


def test_parse_platform_ack() -> None:
    assert parse_platform_ack(b'{"stream":"s1","ranges":[[1,3],[7,7]]}') == ("s1", [(1, 3), (7, 7)])
    assert parse_platform_ack(b'{"stream":"s1","ranges":[]}') == ("s1", [])
    for payload, reason in [
        (b"not json", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'{"ranges":[[1,2]]}', 'string "stream"'),
        (b'{"stream":"s1"}', '"ranges"'),
        (b'{"stream":"s1","ranges":[[3,1]]}', "first <= last"),
        (b'{"stream":"s1","ranges":[[1,2,3]]}', "first <= last"),
        (b'{"stream":"s1","ranges":[[1.0,2]]}', "first <= last"),
        (b'{"stream":"s1","ranges":[[true,2]]}', "first <= last"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_platform_ack(payload)


def test_ledger_account_names_new_and_duplicate_batches() -> None:
    ledger = Ledger()
    batch = make_batch(5)
    first = ledger.account(batch.payload, None, f"edge/{GATEWAY}/batch")
    again = ledger.account(batch.payload, None, f"edge/{GATEWAY}/batch")
    assert first is not None and again is not None
    assert (first.gateway, first.stream, first.seq, first.new) == (GATEWAY, "s-test", 5, True)
    assert (again.seq, again.new) == (5, False)
    assert ledger.account(b"garbage") is None
    assert ledger.report()["duplicates"]["batches"] == 1
    assert ledger.report()["invalid"]["count"] == 1


def _publish(broker: Broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_send_returns_once_the_platform_acknowledged(mosquitto: Broker, tmp_path: Path,
                                                           protocol: str) -> None:
    receiver = PlatformReceiver(mosquitto.host, mosquitto.port, ack=True)
    await receiver.start()
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, protocol=protocol,
                               ack="platform", platform_ack_timeout=20), ctx)
    batches = [make_batch(seq) for seq in range(1, 11)] + [make_batch(11, events=True)]
    try:
        await uplink.start()
        await asyncio.gather(*(uplink.send(b) for b in batches))
        # returned: each one is in the books already, not only at the broker
        assert receiver.report()["batches"] == 11
        await uplink.send(batches[0])  # a duplicate is acknowledged again
    finally:
        await uplink.stop()
        await receiver.stop()
    assert receiver.acks_sent == 12
    assert ctx.counters["platform_acked"] == 12
    assert "platform_ack_timeouts" not in ctx.counters
    report = receiver.report()
    assert report["gaps"] == {} and report["duplicates"]["batches"] == 1


async def test_no_platform_acknowledgement_fails_the_send(mosquitto: Broker, tmp_path: Path) -> None:
    # A receiver that does not acknowledge: the broker has the batch, the platform too, but the
    # gateway cannot know that, so the batch must stay in its outbox and be sent again.
    receiver = PlatformReceiver(mosquitto.host, mosquitto.port, ack=False)
    await receiver.start()
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, ack="platform",
                               platform_ack_timeout=0.5), ctx)
    try:
        await uplink.start()
        with pytest.raises(UplinkUnavailable, match=f"no acknowledgement from the platform on "
                           f"{ACK_TOPIC} within 0.5 s"):
            await uplink.send(make_batch(1))
        await async_wait_for(lambda: receiver.report()["batches"] == 1, what="batch at the platform")
        assert ctx.counters["platform_ack_timeouts"] == 1
        # the same batch sent again once the platform acknowledges
        receiver.ack = True
        await uplink.send(make_batch(1))
    finally:
        await uplink.stop()
        await receiver.stop()
    assert ctx.counters["platform_acked"] == 1
    assert receiver.report()["batches"] == 2  # make_batch gives a new batch id each call


async def test_foreign_and_malformed_acknowledgements_are_counted(mosquitto: Broker,
                                                                  tmp_path: Path) -> None:
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=mosquitto.host, port=mosquitto.port, ack="platform",
                               platform_ack_timeout=20), ctx)
    await uplink.start()
    try:
        send = asyncio.create_task(uplink.send(make_batch(3)))
        await async_wait_for(lambda: ctx.counters.get("published_bytes"), what="batch published")
        # another stream's ack for the same seq, a range missing it, garbage: still waiting
        _publish(mosquitto, ACK_TOPIC, json.dumps({"stream": "old", "ranges": [[1, 9]]}).encode())
        _publish(mosquitto, ACK_TOPIC, json.dumps({"stream": "s-test", "ranges": [[1, 2]]}).encode())
        _publish(mosquitto, ACK_TOPIC, b"{not json")
        _publish(mosquitto, ACK_TOPIC, b"{not json")
        await async_wait_for(lambda: ctx.counters.get("platform_ack_invalid") == 2,
                             what="two malformed acknowledgements counted")
        assert ctx.counters["platform_ack_other_stream"] == 1
        assert not send.done()
        _publish(mosquitto, ACK_TOPIC, json.dumps({"stream": "s-test", "ranges": [[3, 4]]}).encode())
        await asyncio.wait_for(send, timeout=10)
    finally:
        await uplink.stop()
    assert ctx.counters["platform_acked"] == 1


async def test_connection_lost_before_the_acknowledgement_fails_at_once(tmp_path: Path) -> None:
    broker = Broker(workdir=tmp_path).start()
    ctx = uplink_context(tmp_path, "mqtt")
    uplink = MqttUplink(Config(host=broker.host, port=broker.port, ack="platform",
                               platform_ack_timeout=60, keepalive=5), ctx)
    try:
        await uplink.start()
        send = asyncio.create_task(uplink.send(make_batch(1)))
        await async_wait_for(lambda: ctx.counters.get("published_bytes"), what="batch published")
        broker.stop()
        # well before the 60 s timeout: the acknowledgement can no longer reach this session
        with pytest.raises(UplinkUnavailable, match="before the platform acknowledged"):
            await asyncio.wait_for(send, timeout=20)
    finally:
        await uplink.stop()
        broker.stop()
