"""Network-server uplink JSON: ChirpStack v4, ChirpStack v3, The Things Stack v3.

The documents follow the field names of each project's documentation: ChirpStack v4 docs
"Integrations > Events > up" (deviceInfo.devEui, time, fCnt, fPort, data, object, rxInfo),
ChirpStack v3 docs "Event types > uplink" (devEUI, rxInfo[].loRaSNR, objectJSON) and The Things
Stack docs "Data formats > Uplink messages" (end_device_ids, uplink_message.frm_payload,
decoded_payload, rx_metadata, received_at)."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan.decode import ns_readings
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.network_server import parse_iso_time, parse_uplink

LHT65 = bytes.fromhex("CBF60B0D0376010ADD7FFF")
B64 = base64.b64encode(LHT65).decode()

CS4 = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {"tenantId": "52f14cd4", "applicationId": "17c82e96", "deviceProfileName": "lht65",
                   "deviceName": "dev", "devEui": "0101010101010101"},
    "devAddr": "00189440", "fCnt": 7, "fPort": 2, "data": B64,
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -57, "snr": 10.5},
               {"gatewayId": "0016c001f153a14d", "rssi": -91, "snr": 2.0}],
}
CS3 = {
    "applicationID": "123", "applicationName": "temperature-sensor", "deviceName": "garden-sensor",
    "devEUI": "0202020202020202",
    "rxInfo": [{"gatewayID": "0303030303030303", "time": "2019-11-08T13:59:25.048445Z", "rssi": -48, "loRaSNR": 9}],
    "txInfo": {"frequency": 868100000, "dr": 5}, "adr": False, "fCnt": 10, "fPort": 5, "data": "AQID",
    "objectJSON": "{\"temperature\":22.5,\"humidity\":61}",
}
TTS = {
    "end_device_ids": {"device_id": "dev1", "application_ids": {"application_id": "app1"},
                       "dev_eui": "70B3D57ED0000001", "dev_addr": "260B1234"},
    "received_at": "2024-01-01T10:00:01.123456789Z",
    "uplink_message": {"f_port": 2, "f_cnt": 3, "frm_payload": B64,
                       "rx_metadata": [{"gateway_ids": {"gateway_id": "gw"}, "rssi": -100, "channel_rssi": -100,
                                        "snr": -3.25}],
                       "received_at": "2024-01-01T10:00:00.5Z"},
}


def test_chirpstack_v4() -> None:
    up = parse_uplink(msgspec.json.encode(CS4), received=1.0)
    assert (up.source, up.dev_eui, up.fport, up.fcnt, up.payload) == ("chirpstack_v4", "0101010101010101", 2, 7, LHT65)
    assert up.ts == pytest.approx(1658136855.775023)
    assert (up.rssi, up.snr) == (-57, 10.5)  # best gateway
    readings = ns_readings(up, "dragino_lht65", use_decoded=True)
    assert {r.metric: r.value for r in readings} == pytest.approx(
        {"battery_voltage": 3.062, "battery_status": "good", "temperature": 28.29, "humidity": 88.6, "temperature_external": 27.81,
         "rssi": -57.0, "snr": 10.5})
    assert {r.device for r in readings} == {"lora:0101010101010101"}


def test_chirpstack_v3_uses_object_json_and_rx_time() -> None:
    up = parse_uplink(msgspec.json.encode(CS3), received=1.0)
    assert up.source == "chirpstack_v3" and up.ts == pytest.approx(1573221565.048445)
    readings = ns_readings(up, "", use_decoded=True)
    assert [(r.metric, r.value) for r in readings] == [("temperature", 22.5), ("humidity", 61.0), ("rssi", -48.0),
                                                      ("snr", 9.0)]


def test_chirpstack_v3_bad_base64_without_object() -> None:
    doc = dict(CS3, objectJSON="", data="...")
    with pytest.raises(LoRaWANDecodeError) as info:
        parse_uplink(msgspec.json.encode(doc), received=1.0)
    assert info.value.cause == "bad_base64"


def test_tts_v3() -> None:
    up = parse_uplink(msgspec.json.encode(TTS), received=5.0)
    assert (up.source, up.dev_eui, up.fcnt, up.rssi, up.snr) == ("tts_v3", "70b3d57ed0000001", 3, -100, -3.25)
    assert up.ts == pytest.approx(1704103200.5)


def test_missing_fields_default_and_receive_time() -> None:
    up = parse_uplink(b'{"deviceInfo":{"devEui":"0101010101010101"}}', received=123.0)
    assert (up.ts, up.payload, up.rssi, up.fport) == (123.0, None, None, None)
    assert ns_readings(up, "elsys", use_decoded=True) == []


def test_decoded_object_preferred_and_cayenne_channels() -> None:
    doc = dict(CS4, object={"temperature_3": 27.2, "humidity_2": 40, "pressure": 1013.2, "status": "ok"})
    up = parse_uplink(msgspec.json.encode(doc), received=1.0)
    metrics = {r.metric: r.value for r in ns_readings(up, "dragino_lht65", use_decoded=True)}
    assert metrics == pytest.approx({"temperature": 27.2, "humidity": 40.0, "pressure": 101320.0, "rssi": -57.0,
                                     "snr": 10.5})
    local = {r.metric for r in ns_readings(up, "dragino_lht65", use_decoded=False)}
    assert "temperature_external" in local


@pytest.mark.parametrize(("body", "cause"), [
    (b"not json", "bad_json"), (b"[1,2]", "bad_json"), (b'{"deviceInfo":"\xc3"}', "bad_json"), (b'{"foo": 1}', "unknown_format"),
    (b'{"deviceInfo":{"devEui":"xyz"}}', "unknown_deveui"),
    (b'{"deviceInfo":{"devEui":"0101010101010101"},"data":"%%%"}', "bad_base64"),
])
def test_rejects(body: bytes, cause: str) -> None:
    with pytest.raises(LoRaWANDecodeError) as info:
        parse_uplink(body, received=0.0)
    assert info.value.cause == cause


def test_iso_times() -> None:
    assert parse_iso_time("2024-01-01T00:00:00Z") == 1704067200.0
    assert parse_iso_time("2024-01-01T00:00:00") is None  # no zone: unusable
    assert parse_iso_time(12) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["deviceInfo", "end_device_ids", "uplink_message", "devEUI", "rxInfo", "data", "object",
                        "fPort", "time", "objectJSON", "rx_metadata", "devEui", "dev_eui", "frm_payload"])


@given(st.dictionaries(keys, json_values, max_size=6))
def test_arbitrary_json_raises_only_decode_error(doc: dict[str, object]) -> None:
    try:
        up = parse_uplink(msgspec.json.encode(doc), received=0.0)
        ns_readings(up, "cayenne_lpp", use_decoded=True)
    except LoRaWANDecodeError:
        pass


@given(st.binary(max_size=60))
def test_arbitrary_bytes(body: bytes) -> None:
    try:
        parse_uplink(body, received=0.0)
    except LoRaWANDecodeError:
        pass


DEEP = b"[" * 5000 + b"]" * 5000  # issue 17: fits in 10 KB, gave RecursionError


@pytest.mark.parametrize(("body", "cause"), [
    (DEEP, "json_too_deep"),
    (b'{"deviceInfo":{"devEui":"0101010101010101"},"object":{"a":' + DEEP + b"}}", "json_too_deep"),
    (b'{"devEUI":"0202020202020202","objectJSON":"{\\"a\\":' + b"[" * 5000 + b']"}', "json_too_deep"),
    (b'{"deviceInfo":{"devEui":"0101010101010101"},"x":"' + b"a" * 65536 + b'"}', "json_too_large"),
])
def test_nesting_and_size_are_capped(body: bytes, cause: str) -> None:
    with pytest.raises(LoRaWANDecodeError) as info:
        parse_uplink(body, received=0.0)
    assert info.value.cause == cause


def test_caps_leave_real_documents_alone() -> None:
    from drivers.lorawan.json_limits import MAX_JSON_DEPTH

    nested: object = 1
    for _ in range(MAX_JSON_DEPTH - 2):  # the document and "object" are two levels
        nested = [nested]
    brackets = "[" * 40 + "]" * 40  # inside a string: not nesting
    doc = dict(CS4, object={"temperature": 21.5, "deep": nested, "note": brackets})
    up = parse_uplink(msgspec.json.encode(doc), received=0.0)
    assert up.decoded is not None and up.decoded["note"] == brackets
    with pytest.raises(LoRaWANDecodeError) as info:
        parse_uplink(msgspec.json.encode(dict(doc, object={"deep": [nested]})), received=0.0)
    assert info.value.cause == "json_too_deep"
