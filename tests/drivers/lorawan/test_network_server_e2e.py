"""Network-server mode end to end through a real Mosquitto broker: the simulator publishes
ChirpStack v4, The Things Stack v3 and ChirpStack v3 uplink JSON; the driver subscribes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest

from drivers.lorawan.driver import LoRaWANDriver
from gateway import model
from gateway.errors import DriverError
from gateway.windows import Aggregator, finalize
from simulators.lorawan import NetworkServerPublisher, make_fleet
from simulators.lorawan.publisher import uplink_document
from tests.drivers.lorawan.conftest import Collected, make_config
from tests.support.mosquitto import Broker, make_tls
from tests.support.wait import async_wait_for

# slow: end to end through a broker (make test-fast leaves it out)
pytestmark = pytest.mark.slow

TOPICS = ["application/+/device/+/event/up", "application/+/device/+/rx", "v3/+/devices/+/up"]


def _publish(broker: Broker, topic: str, body: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, body, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


async def test_three_integrations_through_mosquitto(mosquitto: Broker, collected: Collected) -> None:
    fleet = make_fleet(1, otaa_every=0)  # one sensor per codec family
    config = make_config(mode="network_server", mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
                         mqtt_topics=TOPICS, devices=[{"dev_eui": s.eui_hex, "codec": s.family} for s in fleet])
    ctx = collected.context()
    driver = LoRaWANDriver(config, ctx)
    task = asyncio.create_task(driver.run())
    try:
        await async_wait_for(lambda: driver.mqtt is not None and driver.mqtt.subscribed is not None
                             and driver.mqtt.subscribed.is_set(), what="driver subscribed")
        formats = ("chirpstack_v4", "tts_v3", "chirpstack_v3")
        pub = NetworkServerPublisher(mosquitto.host, mosquitto.port, fleet, formats=formats, interval=0.01, rounds=4)
        await pub.start()
        await asyncio.wait_for(pub.done.wait(), 20)
        await pub.stop()
        sent = pub.counts["published"]
        assert sent == 20
        # the publisher gives sensor i the format i mod 3 every round: of the 5 sensors, two
        # publish each of the first two formats and one the third, 4 rounds
        expected = {"chirpstack_v4": 8, "tts_v3": 8, "chirpstack_v3": 4}
        decoded = lambda: {f: ctx.counters.get(f"uplinks_{f}", 0) for f in formats}  # noqa: E731
        await async_wait_for(lambda: decoded() == expected, what="every published uplink decoded")

        # bad field data: counted, never fatal
        _publish(mosquitto, "application/x/device/y/event/up", b"{no json")
        topic, doc = uplink_document("chirpstack_v4", fleet[0], 99, 1, b"")
        doc["data"] = "@@not base64@@"
        _publish(mosquitto, topic, msgspec.json.encode(doc))
        await async_wait_for(lambda: ctx.decode_errors == {"bad_json": 1, "bad_base64": 1},
                             what=f"errors counted, got {ctx.decode_errors}")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    got: dict[str, dict[str, list[float]]] = {}
    for r in collected.readings:
        got.setdefault(r.device, {}).setdefault(r.metric, []).append(r.value)  # type: ignore[arg-type]
    for eui, expected in pub.expected:
        for metric, value in expected.items():
            want = value if isinstance(value, str) else pytest.approx(value, abs=0.01)
            assert any(v == want for v in got[f"lora:{eui}"][metric]), (eui, metric)
    assert all(got[d]["rssi"] for d in got)

    agg = Aggregator(window=60)
    for reading in collected.readings:
        agg.add(reading)
    records = [finalize(k[0], k[1], s, 60, a) for s, k, a in agg.flush_all().closed]
    assert sum(r.count for r in records if r.metric == "temperature") == 20
    # event time comes from the network server's time field
    assert all(abs(r.ts - collected.readings[0].ts) < 60 for r in collected.readings)


async def test_broker_loss_raises_for_the_runtime(mosquitto: Broker, collected: Collected) -> None:
    config = make_config(mode="network_server", mqtt_host=mosquitto.host, mqtt_port=mosquitto.port)
    driver = LoRaWANDriver(config, collected.context())
    task = asyncio.create_task(driver.run())
    await async_wait_for(lambda: driver.mqtt is not None and driver.mqtt.subscribed is not None
                         and driver.mqtt.subscribed.is_set(), what="subscribed")
    mosquitto.stop()
    with pytest.raises(DriverError):
        await asyncio.wait_for(task, 10)


async def test_unreachable_broker_raises(collected: Collected) -> None:
    from tests.support.ports import free_port

    config = make_config(mode="network_server", mqtt_host="127.0.0.1", mqtt_port=free_port())
    with pytest.raises(DriverError):
        await asyncio.wait_for(LoRaWANDriver(config, collected.context()).run(), 10)


async def test_partial_frames_are_counted_by_cause_and_keep_their_readings(mosquitto: Broker,
                                                                           collected: Collected) -> None:
    (lht65,) = make_fleet(1, families=["dragino_lht65"], otaa_every=0)
    (other,) = make_fleet(1, families=["elsys"], otaa_every=0, seed=9)
    other.dev_eui ^= 0xFF  # not configured: default_codec "" = link quality only
    config = make_config(mode="network_server", mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
                         mqtt_topics=TOPICS, devices=[{"dev_eui": lht65.eui_hex, "codec": "dragino_lht65"}])
    ctx = collected.context()
    driver = LoRaWANDriver(config, ctx)
    task = asyncio.create_task(driver.run())
    try:
        await async_wait_for(lambda: driver.mqtt is not None and driver.mqtt.subscribed is not None
                             and driver.mqtt.subscribed.is_set(), what="driver subscribed")
        no_probe = bytes.fromhex("CBF60B0D0376017FFF7FFF")  # LHT65 manual 2.4.6: Ext 0x01, 0x7FFF
        for fmt, sensor, fcnt, fport, payload, obj in [
            ("chirpstack_v4", lht65, 1, 2, no_probe, None),
            ("tts_v3", lht65, 2, 3, no_probe, None),  # the datalog port: not read by this codec
            ("chirpstack_v4", other, 1, 5, b"\x01\x00\xe2", None),
            ("chirpstack_v3", other, 2, 5, b"", {"temperatureSensor": {"1": 25}, "status": "ok",
                                                 "soilEC": {"value": 1.25, "unit": "dS/m"}, "log": [1, 2]}),
        ]:
            topic, doc = uplink_document(fmt, sensor, fcnt, fport, payload, rssi=-70.0, snr=4.0, with_object=obj)
            _publish(mosquitto, topic, msgspec.json.encode(doc))
        # "status" is text outside the catalog (a state only if configured), "log" a list
        expected = {"sensor_absent": 1, "unexpected_fport": 1, "no_codec": 1, "unmapped_key": 1,
                    "unknown_metric_not_numeric": 1}
        await async_wait_for(lambda: ctx.decode_errors == expected, what=f"causes counted, got {ctx.decode_errors}")
        await async_wait_for(lambda: len(collected.readings) == 6 + 2 + 4, what="readings")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    got = sorted((r.device, r.metric) for r in collected.readings)
    lht, oth = f"lora:{lht65.eui_hex}", f"lora:{other.eui_hex}"
    assert got == sorted([(lht, "battery_voltage"), (lht, "battery_status"), (lht, "temperature"), (lht, "humidity"), (lht, "rssi"),
                          (lht, "snr"), (oth, "rssi"), (oth, "snr"),
                          (oth, "temperature"), (oth, "rssi"), (oth, "snr"), (oth, "x_soil_ec")])
    assert ctx.counters.get("unknown_metric_forwarded") == 1
    assert model.metric("x_soil_ec").unit == "dS/m"
    assert {w[1]["cause"] for w in collected.warnings} >= set(expected)


async def _run_until_subscribed(driver: LoRaWANDriver) -> asyncio.Task[None]:
    task = asyncio.create_task(driver.run())
    await async_wait_for(lambda: task.done() or (driver.mqtt is not None and driver.mqtt.subscribed.is_set()),
                         what="driver subscribed")
    if task.done():
        task.result()  # raise what stopped it
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_uplinks_published_while_the_driver_is_down_arrive_exactly_once(
        mosquitto: Broker, collected: Collected) -> None:
    # The persistent session (default): the broker queues QoS 1 uplinks for the driver's client
    # id while it is stopped (a gateway restart), and hands them over when it is back.
    (sensor,) = make_fleet(1, families=["dragino_lht65"], otaa_every=0)
    config = make_config(mode="network_server", mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
                         mqtt_topics=TOPICS, devices=[{"dev_eui": sensor.eui_hex, "codec": "dragino_lht65"}])
    ctx = collected.context()
    payload = bytes.fromhex("CBF60B0D0376010ADD7FFF")  # the LHT65 manual example frame: 28.29 Cel, 88.6 %RH

    def publish(fcnts: range) -> None:
        for fcnt in fcnts:
            topic, doc = uplink_document("chirpstack_v4", sensor, fcnt, 2, payload)
            _publish(mosquitto, topic, msgspec.json.encode(doc))

    def uplinks() -> int:
        return ctx.counters.get("uplinks_chirpstack_v4", 0)

    driver = LoRaWANDriver(config, ctx)
    task = await _run_until_subscribed(driver)
    assert driver.mqtt is not None and driver.mqtt.settings.client_id == "eg-gw-test-lora"
    await asyncio.to_thread(publish, range(1, 6))
    await async_wait_for(lambda: uplinks() == 5, what="5 uplinks while running")
    await _stop(task)  # the driver stops (gateway restart): its session stays at the broker

    await asyncio.to_thread(publish, range(6, 31))  # 25 uplinks while nobody listens
    restarted = LoRaWANDriver(config, ctx)
    task = await _run_until_subscribed(restarted)
    try:
        assert restarted.mqtt is not None and restarted.mqtt.session_present
        await async_wait_for(lambda: uplinks() == 30, what="the 25 queued uplinks")
        await asyncio.to_thread(publish, range(31, 32))  # a marker behind them: no duplicate came
        await async_wait_for(lambda: uplinks() == 31, what="the marker uplink")
    finally:
        await _stop(task)
    assert uplinks() == 31
    temperatures = [r for r in collected.readings if r.metric == "temperature"]
    assert len(temperatures) == 31
    assert ctx.decode_errors == {}


async def test_network_server_over_tls_with_credentials(tmp_path: Path, collected: Collected) -> None:
    tls = make_tls(tmp_path)
    (tmp_path / "broker").mkdir()
    broker = Broker(workdir=tmp_path / "broker", tls=tls, require_certificate=True,
                    users={"gw": "secret"}).start()
    try:
        (sensor,) = make_fleet(1, families=["dragino_lht65"], otaa_every=0)
        config = make_config(mode="network_server", mqtt_host=broker.host, mqtt_port=broker.port,
                             mqtt_tls=True, mqtt_ca_file=str(tls.ca), mqtt_cert_file=str(tls.client_cert),
                             mqtt_key_file=str(tls.client_key), mqtt_username="gw", mqtt_password="secret",
                             devices=[{"dev_eui": sensor.eui_hex, "codec": "dragino_lht65"}])
        ctx = collected.context()
        task = await _run_until_subscribed(LoRaWANDriver(config, ctx))
        try:
            topic, doc = uplink_document("chirpstack_v4", sensor, 1, 2, bytes.fromhex("CBF60B0D0376010ADD7FFF"))
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
            client.username_pw_set("gw", "secret")
            client.connect(broker.host, broker.port)
            client.loop_start()
            client.publish(topic, msgspec.json.encode(doc), qos=1).wait_for_publish(5)
            client.disconnect()
            client.loop_stop()
            await async_wait_for(lambda: ctx.counters.get("uplinks_chirpstack_v4") == 1, what="uplink over TLS")
        finally:
            await _stop(task)
        # a wrong password over TLS: the driver fails with the broker's refusal
        bad = make_config(mode="network_server", mqtt_host=broker.host, mqtt_port=broker.port,
                          mqtt_tls=True, mqtt_ca_file=str(tls.ca), mqtt_cert_file=str(tls.client_cert),
                          mqtt_key_file=str(tls.client_key), mqtt_username="gw", mqtt_password="wrong")
        with pytest.raises(DriverError, match="refused the connection: code 5"):
            await asyncio.wait_for(LoRaWANDriver(bad, collected.context()).run(), 10)
    finally:
        broker.stop()


def test_mqtt_config_problems_are_named() -> None:
    assert make_config(mqtt_ca_file="ca.pem").validate() == [
        "mqtt_ca_file: expected mqtt_tls = true with it, found mqtt_tls = false"]
    assert make_config(mqtt_tls=True, mqtt_cert_file="c.pem").validate() == [
        "mqtt_cert_file: expected mqtt_cert_file and mqtt_key_file together, found 'c.pem' and ''"]
    assert make_config(mqtt_password="p").validate() == [
        'mqtt_password: expected an mqtt_username with it, found ""']
