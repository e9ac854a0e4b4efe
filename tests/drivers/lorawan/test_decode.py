"""Uplink -> readings and counted problems (issue 13's LoRaWAN findings), each shown with the
published example that exposed it."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan import concentrator
from drivers.lorawan import semtech_udp as su
from drivers.lorawan.decode import decode_ns, decode_payload
from drivers.lorawan.network_server import parse_uplink

G = 9.80665

# ChirpStack v4 docs, Integrations > Events > "up" (shape; as in test_network_server.py).
CS4 = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {"tenantId": "52f14cd4", "applicationId": "17c82e96", "deviceProfileName": "lht65",
                   "deviceName": "dev", "devEui": "0101010101010101"},
    "devAddr": "00189440", "fCnt": 7, "fPort": 2, "data": base64.b64encode(bytes.fromhex("CBF60B0D0376010ADD7FFF")).decode(),
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -57, "snr": 10.5},
               {"gatewayId": "0016c001f153a14d", "rssi": -91, "snr": 2.0}],
}
# ChirpStack application server (v3) docs, docs/content/integrations/mqtt.md (brocaar/
# chirpstack-application-server), "application/[applicationID]/device/[devEUI]/rx" example,
# comments removed and "data" left out (the docs show "...").
CS3_DOC = {
    "applicationID": "123", "applicationName": "temperature-sensor", "deviceName": "garden-sensor",
    "devEUI": "0202020202020202",
    "rxInfo": [{"gatewayID": "0303030303030303", "name": "rooftop-gateway", "time": "2016-11-25T16:24:37.295915988Z",
                "rssi": -57, "loRaSNR": 10,
                "location": {"latitude": 52.3740364, "longitude": 4.9144401, "altitude": 10.5}}],
    "txInfo": {"frequency": 868100000, "dr": 5}, "adr": False, "fCnt": 10, "fPort": 5,
    "object": {"temperatureSensor": {"1": 25}, "humiditySensor": {"1": 32}},
}
# Lora-net/packet_forwarder PROTOCOL.TXT section 4, the second rxpk of the PUSH_DATA example: an
# FSK packet, which has no "lsnr".
FSK_RXPK = (b'{"rxpk":[{"time":"2013-03-31T16:21:17.530974Z","tmst":3512348514,"chan":9,"rfch":1,'
            b'"freq":869.1,"stat":1,"modu":"FSK","datr":50000,"rssi":-75,"size":16,'
            b'"data":"VEVTVF9QQUNLRVRfMTIzNA=="}]}')
# Dragino LHT65 manual section 2.4 example payload, and with Ext 0x01 reading 0x7FFF (no probe).
LHT65 = bytes.fromhex("CBF60B0D0376010ADD7FFF")
LHT65_NO_PROBE = bytes.fromhex("CBF60B0D0376017FFF7FFF")
# myDevices CayenneLPP README example 1 (also The Things Stack docs, payload formatters >
# CayenneLPP): temperature 27.2 degC on channel 3 and 25.5 degC on channel 5.
LPP_TWO_PROBES = bytes.fromhex("03670110056700FF")
EUI = "a84041000181c61e"


def _table(readings: list) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    table = {(r.device, r.metric): r.value for r in readings}
    assert len(table) == len(readings), "two readings of one series in one frame"
    return table


def test_link_quality_only_network_server_uplink_still_gives_rssi_and_snr() -> None:
    # default_codec = "" is documented as "link quality only": the payload cannot be decoded
    # (counted once as no_codec), the link quality is still forwarded.
    up = parse_uplink(msgspec.json.encode(CS4), received=1.0)
    decoded = decode_ns(up, "", use_decoded=True)
    assert _table(decoded.readings) == {("lora:0101010101010101", "rssi"): -57.0,
                                        ("lora:0101010101010101", "snr"): 10.5}
    assert [(p.cause, p.device) for p in decoded.problems] == [("no_codec", "lora:0101010101010101")]
    assert all(r.ts == pytest.approx(1658136855.775023) for r in decoded.readings)


def test_fsk_packet_has_no_snr_reading_and_a_packet_without_rssi_no_rssi_reading() -> None:
    datagram = su.parse_datagram(b"\x02\x00\x01\x00" + bytes.fromhex("aa555a0000000000") + FSK_RXPK)
    (rx,) = datagram.rxpk
    assert (rx.modu, rx.rssi, rx.lsnr) == ("FSK", -75, None)
    heard = concentrator.Heard(rxpk=rx, gateway_eui=1, received=0.0, event_ts=0.0)
    assert (heard.rssi, heard.snr) == (-75, None)
    decoded = decode_payload(EUI, "dragino_lht65", LHT65, 2, 0.0, heard.rssi, heard.snr)
    assert ("lora:" + EUI, "snr") not in _table(decoded.readings)
    assert _table(decoded.readings)[("lora:" + EUI, "rssi")] == -75.0

    bare = su.RxPk(data="QAEC")  # neither rssi nor lsnr
    heard = concentrator.Heard(rxpk=bare, gateway_eui=1, received=0.0, event_ts=0.0)
    assert (heard.rssi, heard.snr) == (None, None)
    decoded = decode_payload(EUI, "dragino_lht65", LHT65, 2, 0.0, heard.rssi, heard.snr)
    assert {metric for _, metric in _table(decoded.readings)} == {
        "battery_voltage", "battery_status", "temperature", "humidity", "temperature_external"}


def test_dedup_keeps_the_best_present_link_values_across_lora_and_fsk_copies() -> None:
    dedup = concentrator.Deduplicator(0.2)
    fsk = su.RxPk(data="QAEC", rssi=-75.0)
    lora = su.RxPk(data="QAEC", rssi=-90.0, lsnr=-3.5)
    assert dedup.offer(b"frame", concentrator.Heard(rxpk=fsk, gateway_eui=1, received=0.0, event_ts=0.0))
    assert not dedup.offer(b"frame", concentrator.Heard(rxpk=lora, gateway_eui=2, received=0.01, event_ts=0.0))
    heard = dedup.take(b"frame", 0.3)
    assert heard is not None
    assert (heard.rssi, heard.snr, heard.copies, heard.gateway_eui) == (-75.0, -3.5, 2, 1)


@pytest.mark.parametrize("fport", [3, 5])
def test_lht65_frame_on_an_unexpected_port_is_a_decode_error(fport: int) -> None:
    from drivers.lorawan.errors import LoRaWANDecodeError

    with pytest.raises(LoRaWANDecodeError) as info:
        decode_payload(EUI, "dragino_lht65", LHT65, fport, 0.0, -80.0, 5.0)
    assert (info.value.cause, info.value.device) == ("unexpected_fport", "lora:" + EUI)


def test_lht65_without_probe_counts_sensor_absent_and_keeps_the_other_readings() -> None:
    decoded = decode_payload(EUI, "dragino_lht65", LHT65_NO_PROBE, 2, 0.0, None, None)
    device = "lora:" + EUI
    assert _table(decoded.readings) == pytest.approx({
        (device, "battery_voltage"): 3.062, (device, "battery_status"): "good", (device, "temperature"): 28.29,
        (device, "humidity"): 88.6})
    assert [(p.cause, p.device) for p in decoded.problems] == [("sensor_absent", device)]
    assert "temperature_external" in decoded.problems[0].detail


def test_chirpstack_v3_cayenne_object_from_its_docs_is_mapped() -> None:
    up = parse_uplink(msgspec.json.encode(CS3_DOC), received=1.0)
    decoded = decode_ns(up, "", use_decoded=True)
    device = "lora:0202020202020202"
    assert _table(decoded.readings) == {(device, "temperature"): 25.0, (device, "humidity"): 32.0,
                                        (device, "rssi"): -57.0, (device, "snr"): 10.0}
    assert decoded.problems == []
    assert all(r.ts == pytest.approx(1480091077.295915) for r in decoded.readings)


def test_chirpstack_cayenne_object_other_types_and_unmapped_keys_are_counted() -> None:
    obj = {"temperatureSensor": {"3": 27.2, "5": 25.5}, "barometer": {"4": 1014.1},
           "presenceSensor": {"6": 1}, "accelerometer": {"7": {"x": 1.234, "y": -1.234, "z": 0}},
           "digitalInput": {"2": 1}, "gpsLocation": {"8": {"latitude": 52.1, "longitude": 4.2, "altitude": 3}},
           "status": "ok"}
    up = parse_uplink(msgspec.json.encode(dict(CS3_DOC, object=obj)), received=1.0)
    decoded = decode_ns(up, "", use_decoded=True)
    device = "lora:0202020202020202"
    assert _table(decoded.readings) == pytest.approx({
        (device + "/3", "temperature"): 27.2, (device + "/5", "temperature"): 25.5,
        (device, "pressure"): 101410.0, (device, "occupancy"): 1.0,
        (device, "acceleration_x"): 1.234 * G, (device, "acceleration_y"): -1.234 * G, (device, "acceleration_z"): 0.0,
        (device, "digital_input"): 1.0,
        (device, "latitude"): 52.1, (device, "longitude"): 4.2, (device, "altitude"): 3.0,
        (device, "rssi"): -57.0, (device, "snr"): 10.0})
    # a key outside the catalog travels under its x_ name (text: kept only for a configured state)
    assert [(r.device, r.metric, r.value, unit) for r, unit in decoded.forwarded] == [(device, "x_status", "ok", "")]
    assert decoded.problems == []


def test_unmapped_keys_are_forwarded_when_the_object_gives_nothing_and_no_codec_decodes() -> None:
    obj = {"Ext_sensor": "Temperature Sensor", "soilEC": {"value": 1.25, "unit": "dS/m"}, "valveOpen": True,
           "probe": {"depth": {"cm": 30}, "ids": [1, 2]}, "history": [1, 2]}
    up = parse_uplink(msgspec.json.encode(dict(CS3_DOC, object=obj)), received=1.0)
    decoded = decode_ns(up, "", use_decoded=True)
    assert [(r.metric, r.value, unit) for r, unit in decoded.forwarded] == [
        ("x_ext_sensor", "Temperature Sensor", ""), ("x_soil_ec", 1.25, "dS/m"), ("x_valve_open", 1.0, ""),
        ("x_probe_depth_cm", 30.0, "")]
    # lists cannot travel as a value: still counted as unmapped keys
    assert [(p.cause, p.detail) for p in decoded.problems] == [("unmapped_key", "history")]
    assert {r.metric for r in decoded.readings} == {"rssi", "snr"}


def test_forwarding_is_bounded_per_uplink() -> None:
    from drivers.lorawan.decode import MAX_FORWARDED

    obj = {f"k{i}": i for i in range(MAX_FORWARDED + 3)}
    up = parse_uplink(msgspec.json.encode(dict(CS3_DOC, object=obj)), received=1.0)
    decoded = decode_ns(up, "", use_decoded=True)
    assert len(decoded.forwarded) == MAX_FORWARDED
    assert [p.detail for p in decoded.problems] == [f"k{i}" for i in range(MAX_FORWARDED, MAX_FORWARDED + 3)]


def test_object_keys_are_not_forwarded_when_the_payload_is_decoded_here() -> None:
    # the codec's readings replace the object: its keys are neither forwarded nor counted
    doc = dict(CS3_DOC, object={"mystery": 1}, data=base64.b64encode(LPP_TWO_PROBES).decode())
    decoded = decode_ns(parse_uplink(msgspec.json.encode(doc), received=1.0), "cayenne_lpp", use_decoded=True)
    assert decoded.forwarded == [] and decoded.problems == []
    assert sorted(r.metric for r in decoded.readings) == ["rssi", "snr", "temperature", "temperature"]


def test_cayenne_channels_are_their_own_series() -> None:
    decoded = decode_payload(EUI, "cayenne_lpp", LPP_TWO_PROBES, 1, 0.0, -80.0, 5.0)
    device = "lora:" + EUI
    assert _table(decoded.readings) == {(device + "/3", "temperature"): pytest.approx(27.2),
                                        (device + "/5", "temperature"): pytest.approx(25.5),
                                        (device, "rssi"): -80.0, (device, "snr"): 5.0}
    # The Things Stack's CayenneLPP formatter gives the same frame as {"temperature_3": 27.2,
    # "temperature_5": 25.5} (its docs, payload formatters > CayenneLPP): the same two series.
    tts = {"end_device_ids": {"dev_eui": EUI.upper()},
           "uplink_message": {"f_port": 1, "frm_payload": base64.b64encode(LPP_TWO_PROBES).decode(),
                              "decoded_payload": {"temperature_3": 27.2, "temperature_5": 25.5}}}
    from_ns = decode_ns(parse_uplink(msgspec.json.encode(tts), received=0.0), "", use_decoded=True)
    assert _table(from_ns.readings) == {(device + "/3", "temperature"): 27.2, (device + "/5", "temperature"): 25.5}


def test_cayenne_one_sensor_per_type_keeps_the_plain_device_unless_split() -> None:
    # CayenneLPP README example 2: temperature on channel 1, accelerometer on channel 6.
    payload = bytes.fromhex("0167FFD7067104D2FB2E0000")
    device = "lora:" + EUI
    auto = decode_payload(EUI, "cayenne_lpp", payload, 1, 0.0, None, None)
    assert {r.device for r in auto.readings} == {device}
    split = decode_payload(EUI, "cayenne_lpp", payload, 1, 0.0, -80.0, None, split_channels=True)
    assert sorted((r.device, r.metric) for r in split.readings) == [
        (device, "rssi"), (device + "/1", "temperature"), (device + "/6", "acceleration_x"),
        (device + "/6", "acceleration_y"), (device + "/6", "acceleration_z")]


def test_cayenne_presence_is_a_flag() -> None:
    decoded = decode_payload(EUI, "cayenne_lpp", bytes.fromhex("0166320266000367010F"), 1, 0.0, None, None)
    assert sorted((r.device, r.metric, r.value) for r in decoded.readings) == [
        ("lora:" + EUI, "temperature", pytest.approx(27.1)),
        ("lora:" + EUI + "/1", "occupancy", 1.0), ("lora:" + EUI + "/2", "occupancy", 0.0)]


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["1", "3", "²", "x", "y", "z", "value", "255", "1000"]) | st.text(max_size=4), children,
        max_size=4),
    max_leaves=10,
)
_keys = st.sampled_from(["temperatureSensor", "humiditySensor", "presenceSensor", "barometer", "accelerometer",
                         "accelerometer_7", "temperature_3", "presence_²", "pm2_5", "vdd", "Temp"]) | st.text(max_size=8)


@given(st.dictionaries(_keys, _values, max_size=6))
def test_any_decoded_object_gives_measurements_or_counted_keys_only(obj: dict[str, object]) -> None:
    up = parse_uplink(msgspec.json.encode({"deviceInfo": {"devEui": "0101010101010101"}, "object": obj}),
                      received=0.0)
    decoded = decode_ns(up, "", use_decoded=True)
    assert all(p.cause == "unmapped_key" for p in decoded.problems)
    assert all(isinstance(r.value, float) for r in decoded.readings)
    # every key of the object is accounted for: a reading from it, or a counted unmapped key
    assert len(decoded.problems) <= sum(len(v) if isinstance(v, dict) and v else 1 for v in obj.values())
