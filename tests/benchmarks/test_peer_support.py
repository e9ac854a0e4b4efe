"""Helpers of `benchmarks.peer`: the shared workload, the upstream books, /proc parsing, the
configs of both gateways, and the fake ThingsBoard against a real Mosquitto. No timing here."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.peer_support.bare_subscriber import _packet, split_packets
from benchmarks.peer_support.edge import edge_config
from benchmarks.peer_support.proc import cpu_seconds, parse_stat_cpu, thread_cpu_seconds
from benchmarks.peer_support.thingsboard import (
    connector_config,
    gateway_config,
    launch_env,
    write_config,
)
from benchmarks.peer_support.upstream import FakeThingsBoard, session_limits
from benchmarks.peer_support.workload import (
    PROBE_EUI,
    EdgeBooks,
    ThingsBoardBooks,
    dev_eui,
    iso_time,
    uplink,
    uplink_topic,
)
from drivers.lorawan.decode import ns_readings
from drivers.lorawan.network_server import parse_uplink
from gateway.config import parse_config
from tests.support.mosquitto import Broker
from tests.support.wait import wait_for

# --- the workload -------------------------------------------------------------------------------


def test_uplink_is_read_by_the_lorawan_driver_as_two_readings_at_its_event_time() -> None:
    eui = dev_eui(7)
    body = uplink(eui, 3, 1_700_000_000.25, 21.5, 55.0)
    parsed = parse_uplink(body, received=0.0, fmt="auto")
    assert parsed.source == "chirpstack_v4"
    assert parsed.dev_eui == eui
    assert parsed.ts == 1_700_000_000.25
    readings = ns_readings(parsed, "", True)
    assert sorted((r.metric, r.value) for r in readings) == [("humidity", 55.0), ("temperature", 21.5)]
    assert {r.device for r in readings} == {f"lora:{eui}"}


def test_uplink_topic_matches_chirpstack_v4_and_device_ids_never_collide_with_the_probe() -> None:
    assert uplink_topic("0011223344556677") == "application/climate/device/0011223344556677/event/up"
    euis = {dev_eui(i) for i in range(1000)}
    assert len(euis) == 1000 and PROBE_EUI not in euis
    assert all(len(e) == 16 and int(e, 16) >= 0 for e in euis)


def test_iso_time_is_rfc3339_utc_with_z() -> None:
    assert iso_time(0.5) == "1970-01-01T00:00:00.500000Z"


# --- upstream books ----------------------------------------------------------------------------


def _batch(*records: dict) -> bytes:
    return json.dumps({"windows": list(records)}).encode()


def _record(device: str, metric: str, start: int, count: int, revision: int = 0) -> dict:
    return {"device": device, "metric": metric, "start": start, "count": count, "revision": revision}


def test_edge_books_count_coverage_and_take_the_latest_revision_once() -> None:
    books = EdgeBooks()
    books.ingest(_batch(_record("lora:a", "temperature", 0, 5), _record("lora:a", "humidity", 0, 5)))
    assert books.readings_covered() == 5
    # a late revision carries the merged count (5 + 2): it replaces, it does not add
    books.ingest(_batch(_record("lora:a", "temperature", 0, 7, revision=1)))
    assert books.covered["temperature"] == 7
    assert books.readings_covered() == 5  # humidity decides
    # a duplicate of an older revision changes nothing
    books.ingest(_batch(_record("lora:a", "temperature", 0, 5, revision=0)))
    assert books.covered["temperature"] == 7
    books.ingest(_batch(_record("lora:a", "humidity", 0, 7, revision=1)))
    assert books.readings_covered() == 7
    assert books.revisions == 3 and books.batches == 4


def test_edge_books_keep_the_probe_out() -> None:
    books = EdgeBooks()
    books.ingest(_batch(_record(f"lora:{PROBE_EUI}", "temperature", 0, 3),
                        _record(f"lora:{PROBE_EUI}", "humidity", 0, 3)))
    assert books.readings_covered() == 0 and books.probe_records == 2


def test_thingsboard_books_count_values_per_key_in_gateway_telemetry() -> None:
    books = ThingsBoardBooks()
    books.ingest(json.dumps({
        "70b3d50000000001": [{"ts": 1, "values": {"temperature": 20.0, "humidity": 50.0}},
                             {"ts": 2, "values": {"temperature": 21.0}}],
        PROBE_EUI: [{"ts": 1, "values": {"temperature": 1.0, "humidity": 2.0}}],
    }).encode())
    assert books.covered == {"temperature": 2, "humidity": 1}
    assert books.readings_covered() == 1 and books.probe_values == 2
    books.ingest(json.dumps({"70b3d50000000002": [{"ts": 3, "values": {"humidity": 40.0}}]}).encode())
    assert books.readings_covered() == 2 and books.messages == 2


# --- /proc -------------------------------------------------------------------------------------


def test_parse_stat_cpu_reads_utime_and_stime_after_an_awkward_command_name() -> None:
    # proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194304 10 0 0 0 250 50 0 0 20 0 3 0 100"
    assert parse_stat_cpu(stat, ticks_per_second=100) == 3.0


def test_cpu_seconds_of_this_process_grow_and_threads_include_the_main_one() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cpu_seconds(os.getpid()) >= before
    assert os.getpid() in thread_cpu_seconds(os.getpid())


# --- configs -----------------------------------------------------------------------------------


def test_edge_config_is_valid_for_edge_gateway(tmp_path: Path) -> None:
    text = edge_config(tmp_path / "state", input_port=1884, upstream_port=1885, window=1, grace=0.5)
    config = parse_config(tomllib.loads(text))
    (driver,) = config.drivers
    (uplink_settings,) = config.uplinks
    assert (driver.type, driver.mode, driver.mqtt_port, driver.format) == (
        "lorawan", "network_server", 1884, "chirpstack_v4")
    assert (uplink_settings.type, uplink_settings.port) == ("mqtt", 1885)
    assert config.windows.window == 1 and config.health.listen == ""


def test_thingsboard_configs_map_the_same_fields_and_switch_off_remote_features(tmp_path: Path) -> None:
    general = gateway_config("127.0.0.1", 1885, max_records=1000)
    tb = general["thingsboard"]
    assert (tb["host"], tb["port"]) == ("127.0.0.1", 1885)
    assert tb["remoteConfiguration"] is False and tb["remoteShell"] is False
    assert tb["statistics"]["enable"] is False and general["grpc"]["enabled"] is False
    assert general["connectors"] == [{"type": "mqtt", "name": "chirpstack-input", "configuration": "mqtt.json"}]

    connector = connector_config("127.0.0.1", 1884)
    (mapping,) = connector["dataMapping"]
    assert mapping["topicFilter"] == "application/+/device/+/event/up"
    converter = mapping["converter"]
    assert converter["deviceInfo"]["deviceNameExpression"] == "${deviceInfo.devEui}"
    assert {(t["key"], t["value"], t["tsField"]) for t in converter["timeseries"]} == {
        ("temperature", "${object.temperature}", "${time}"),
        ("humidity", "${object.humidity}", "${time}"),
    }
    folder = write_config(tmp_path / "cfg", input_port=1884, upstream_port=1885, max_records=10)
    assert sorted(p.name for p in folder.iterdir()) == ["logs.json", "mqtt.json", "tb_gateway.json"]
    assert json.loads((folder / "mqtt.json").read_text())["broker"]["port"] == 1884


def test_launch_env_fences_http_but_leaves_loopback_direct(tmp_path: Path) -> None:
    env = launch_env(tmp_path)
    assert env["TB_GW_CONFIG_DIR"] == str(tmp_path)
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    assert "127.0.0.1" in env["NO_PROXY"].split(",")


# --- the fake ThingsBoard on a real broker -----------------------------------------------------


def test_fake_thingsboard_answers_session_limits_and_attribute_requests_and_counts_telemetry(
    mosquitto: Broker,
) -> None:
    fake = FakeThingsBoard(mosquitto.host, mosquitto.port)
    fake.start()
    answers: dict[str, dict] = {}
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: answers.__setitem__(m.topic, json.loads(m.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        subscribed = [client.subscribe(t, qos=1) for t in
                      ("v1/devices/me/rpc/response/+", "v1/gateway/attributes/response")]
        assert all(rc == mqtt.MQTT_ERR_SUCCESS for rc, _ in subscribed)
        wait_for(lambda: client.is_connected(), timeout=5, what="client connected")
        # the request exactly as tb-mqtt-client sends it (request_service_configuration)
        client.publish("v1/devices/me/rpc/request/1",
                       json.dumps({"method": "getSessionLimits", "params": {"timeout": 5000}}), qos=1)
        client.publish("v1/gateway/attributes/request",
                       json.dumps({"id": 4, "device": "dev-1", "client": False, "keys": ["a"]}), qos=1)
        client.publish("v1/gateway/telemetry", json.dumps(
            {"dev-1": [{"ts": 1, "values": {"temperature": 1.0, "humidity": 2.0}}]}), qos=1)
        wait_for(lambda: len(answers) == 2 and fake.books.messages == 1, timeout=5,
                 what="both answers and the telemetry")
        limits = answers["v1/devices/me/rpc/response/1"]
        assert limits == session_limits()
        assert set(limits["rateLimits"]) == {"messages", "telemetryMessages", "telemetryDataPoints"}
        assert answers["v1/gateway/attributes/response"] == {"id": 4, "device": "dev-1", "values": {}}
        assert fake.session_limits_answered.is_set()
        assert fake.covered() == 1 and fake.rpc_methods["getSessionLimits"] == 1
    finally:
        client.disconnect()
        client.loop_stop()
        fake.stop()


# --- the asyncio floor's MQTT framing ----------------------------------------------------------


def _publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", packet_id) + payload
    return _packet(0x32, body)  # PUBLISH, QoS 1


def test_remaining_length_is_mqtt_varint_as_in_the_spec_table() -> None:
    # OASIS MQTT 3.1.1 section 2.2.3, Table 2.4: boundaries of 1..4-byte remaining lengths
    for length, encoded in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                            (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
                            (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01")):
        assert _packet(0x30, bytes(length))[1 : 1 + len(encoded)] == encoded


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.data())
def test_split_packets_finds_every_publish_whatever_the_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(_publish_packet("a/b", i + 1, p) for i, p in enumerate(payloads))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buffer = bytearray()
    bodies: list[bytes] = []
    for chunk in (stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)):
        buffer += chunk
        packets, consumed = split_packets(buffer)
        bodies += [bytes(buffer[start:stop]) for _, start, stop in packets]
        del buffer[:consumed]
    assert not buffer
    assert [b[2 + 3 + 2:] for b in bodies] == payloads  # topic length, "a/b", packet id


@pytest.mark.slow  # a real process
def test_asyncio_floor_subscriber_receives_acknowledges_and_reports(mosquitto: Broker) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.peer_support.bare_subscriber", "--client", "asyncio",
         "--port", str(mosquitto.port), "--topic", "application/+/device/+/event/up", "--count", "50",
         "--timeout", "20"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == "subscribed"
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        infos = [client.publish(uplink_topic(PROBE_EUI), b"{}", qos=1)]  # the probe is not counted
        infos += [client.publish(uplink_topic(dev_eui(i)), uplink(dev_eui(i), i, 0.0, 1.0, 2.0), qos=1)
                  for i in range(50)]
        for info in infos:
            info.wait_for_publish(10)
        assert process.stdout.readline().strip() == "done"
        client.disconnect()
        client.loop_stop()
    finally:
        process.stdin.close()
        assert process.wait(10) == 0


def test_thingsboard_connector_can_stamp_receive_time_instead() -> None:
    (mapping,) = connector_config("127.0.0.1", 1884, event_time=False)["dataMapping"]
    assert all("tsField" not in t for t in mapping["converter"]["timeseries"])
