"""The bounded fuzz run: every decoder that reads bytes from the field or the network.

Each target feeds one entry point mutated real frames (tests/fuzz/inputs.py), arbitrary bytes,
and the nesting and length extremes that once escaped as RecursionError or struct.error; the only
exception allowed out is the driver's own decode error (a subclass of gateway.errors.DecodeError,
or the component's documented one). `make fuzz` runs it; FUZZ_EXAMPLES bounds each target.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.decoders import (
    BTHOME_UUID,
    ENVIRONMENTAL_SENSING_UUID,
    RUUVI_COMPANY_ID,
    bthome,
    pvvx,
    ruuvi,
)
from drivers.ble.errors import BleDecodeError
from drivers.ble.pipeline import AdvertisementPipeline
from drivers.lorawan import phy, semtech_udp
from drivers.lorawan.codecs import CODECS
from drivers.lorawan.decode import decode_ns, decode_payload
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.json_limits import MAX_JSON_DEPTH
from drivers.lorawan.network_server import MAX_UPLINK_BYTES, parse_uplink
from drivers.ocpp.decode import DECODERS, MAX_DEPTH, OcppDecodeError, decode_call, parse_frame
from drivers.replay.records import ReplayDecodeError, iter_records
from drivers.serial import modbus_codec, sds011, wxt
from drivers.serial.errors import SerialDecodeError
from gateway.batch import BatchDecodeError, decode_document
from gateway.errors import ConfigError
from gateway.reload import config_from_text
from gateway.remote_config import Rejected, decode_envelope
from gateway.uplinks.mqtt.client import parse_platform_ack
from tests.drivers.ble import vectors as ble_vectors
from tests.drivers.lorawan.test_codecs import VECTORS as CODEC_VECTORS
from tests.drivers.lorawan.test_network_server import CS3, CS4, TTS
from tests.drivers.lorawan.test_semtech_udp import PUSH_JSON, TXPK_JSON
from tests.drivers.ocpp.vectors import VECTORS as OCPP_VECTORS
from tests.drivers.serial import vectors as serial_vectors
from tests.fuzz.inputs import EXAMPLES, FUZZ, around, json_values, mutated, nested_json, sized

# pytest-timeout's 300 s is sized for one test of the suite; a target here runs EXAMPLES inputs,
# up to ~6 ms each on a loaded 2-core machine (OCPP payloads are the slowest to generate).
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(max(300, int(EXAMPLES * 0.03)))]

# Depths at and past every JSON cap here, and the 5,000 that once killed an OCPP session.
DEPTHS = sorted({MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH,
                 MAX_JSON_DEPTH + 1, 999, 1000, 5000, 100_000})

# --- OCPP-J (OCPP-J 1.6 section 4, OCPP 2.0.1 part 4: [type, id, action, payload] frames) -----

OCPP_SEEDS = [json.dumps([2, f"id{i}", case["action"], case["payload"]]).encode()
              for i, case in enumerate(OCPP_VECTORS)] + [b'[3,"m1",{"status":"Accepted"}]',
                                                         b'[4,"m2","NotImplemented","",{}]']


@FUZZ
@given(mutated(OCPP_SEEDS) | nested_json(DEPTHS) | st.binary(max_size=200)
       | nested_json(DEPTHS).map(lambda inner: b'[2,"m","MeterValues",{"meterValue":' + inner + b"}]"))
def test_ocpp_frames(data: bytes) -> None:
    for text in (data, data.decode("utf-8", "replace")):
        try:
            parse_frame(text)
        except OcppDecodeError:
            pass


_ACTIONS = [(version, action) for version, table in DECODERS.items() for action in table]


@FUZZ
@given(st.sampled_from(_ACTIONS), st.sampled_from(OCPP_VECTORS).map(lambda case: case["payload"]) | json_values(),
       st.data())
def test_ocpp_payloads(version_action: tuple[str, str], payload: object, data: st.DataObject) -> None:
    version, action = version_action
    if isinstance(payload, dict) and payload and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(payload)))
        payload = {**payload, key: data.draw(json_values(8))}  # one field replaced by anything
    try:
        decode_call(version, "CP-1", action, payload, 1.7e9, {"1": "1"})
    except OcppDecodeError:
        pass


# --- LoRaWAN ---------------------------------------------------------------------------------

_NWK, _APP = bytes(range(16)), bytes(range(16, 32))
PHY_SEEDS = [phy.build_data_frame(nwk_skey=_NWK, app_skey=_APP, dev_addr=0x26011234, fcnt32=n, fport=port,
                                  payload=bytes.fromhex(hex_payload))
             for n, (_codec, port, hex_payload, *_rest) in enumerate(CODEC_VECTORS)]
PHY_SEEDS.append(phy.build_join_request(_APP, 0x70B3D57ED0000000, 0x0004A30B001C0530, 0x1234))


@FUZZ
@given(mutated(PHY_SEEDS) | sized(around(phy.MAX_PHY_PAYLOAD)))
def test_lorawan_phy(raw: bytes) -> None:
    for parse in (phy.parse_data_frame, phy.parse_join_request):
        try:
            parse(raw)
        except LoRaWANDecodeError:
            pass


CODEC_SEEDS = {name: [bytes.fromhex(case[2]) for case in CODEC_VECTORS if case[0] == name] or [b"\x00"]
               for name in CODECS}
_ALL_CODEC_SEEDS = [seed for seeds in CODEC_SEEDS.values() for seed in seeds]


@FUZZ
@given(st.sampled_from(sorted(CODECS)), mutated(_ALL_CODEC_SEEDS) | st.binary(max_size=64),
       st.sampled_from([None, 0, 1, 2, 5, 85, 223, 255]))
def test_lorawan_codecs(codec: str, payload: bytes, fport: int | None) -> None:
    try:
        CODECS[codec](payload, fport)
    except LoRaWANDecodeError:
        pass
    try:  # the driver's path around the codec: link quality, catalog mapping, channel split
        decode_payload("0102030405060708", codec, payload, fport, 1.7e9, -80.0, 7.5, split_channels=True)
    except LoRaWANDecodeError:
        pass


SEMTECH_HEAD = b"\x02\x12\x34\x00" + bytes.fromhex("aa555a0000000001")
SEMTECH_SEEDS = [SEMTECH_HEAD + PUSH_JSON, b"\x02\x12\x34\x03" + TXPK_JSON, b"\x02\x12\x34\x02" + SEMTECH_HEAD[4:],
                 b"\x02\x12\x34\x01", b"\x02\x12\x34\x05" + b'{"txpk_ack":{"error":"NONE"}}']


@FUZZ
@given(mutated(SEMTECH_SEEDS) | nested_json(DEPTHS).map(lambda body: SEMTECH_HEAD + body)
       | sized(around(semtech_udp.MAX_DATAGRAM)).map(lambda body: SEMTECH_HEAD + body))
def test_semtech_udp(datagram: bytes) -> None:
    try:
        semtech_udp.parse_datagram(datagram)
    except LoRaWANDecodeError:
        pass


NS_SEEDS = [json.dumps(doc).encode() for doc in (CS3, CS4, TTS)]


@FUZZ
@given(mutated(NS_SEEDS) | nested_json(DEPTHS) | sized(around(MAX_UPLINK_BYTES), fill=(0x20, 0x7B)),
       st.sampled_from(["auto", "chirpstack_v4", "chirpstack_v3", "tts_v3"]), st.sampled_from(sorted(CODECS)))
def test_network_server_uplinks(body: bytes, fmt: str, codec: str) -> None:
    try:
        uplink = parse_uplink(body, 1.7e9, fmt)
    except LoRaWANDecodeError:
        return
    for use_decoded in (True, False):
        try:
            decode_ns(uplink, codec, use_decoded, split_channels=True)
        except LoRaWANDecodeError:
            pass


# --- serial ----------------------------------------------------------------------------------

SDS_SEEDS = [frame for _d, frame, *_rest in serial_vectors.SDS011_FRAMES]


@FUZZ
@given(mutated(SDS_SEEDS) | sized([0, 1, 9, 10, 11, 19, 20]))
def test_sds011_frames(frame: bytes) -> None:
    try:
        sds011.decode_frame(frame)
    except SerialDecodeError:
        pass


WXT_SEEDS = [line for line, *_rest in serial_vectors.WXT_MESSAGES]


@FUZZ
@given(mutated(WXT_SEEDS) | sized([0, 1, 2, 1024, 4096], fill=(0x2C, 0x3D, 0x80)))
def test_wxt_lines(line: bytes) -> None:
    try:
        wxt.decode_line(line, "/dev/ttyUSB0", 1.7e9)
    except SerialDecodeError:
        pass


MODBUS_SEEDS = [modbus_codec.build_read_response(1, 3, [0x00F5, 0x0204, 0xFFFF]),
                modbus_codec.build_read_response(7, 4, [0x8000, 0x7FFF]),
                modbus_codec.with_crc(bytes([1, 0x83, 0x02]))]


@FUZZ
@given(mutated(MODBUS_SEEDS) | sized([0, 1, 4, 5, 255, 256]), st.sampled_from([1, 7]), st.sampled_from([3, 4]),
       st.integers(0, 130))
def test_modbus_responses(frame: bytes, unit: int, function: int, count: int) -> None:
    try:
        modbus_codec.parse_read_response(frame, unit, function, count)
    except SerialDecodeError:
        pass


# --- BLE -------------------------------------------------------------------------------------

RUUVI_SEEDS = [bytes.fromhex(case[2]) for case in ble_vectors.RUUVI]
BTHOME_SEEDS = ([bytes.fromhex(case[2]) for case in ble_vectors.BTHOME]
                + [bytes.fromhex(ble_vectors.BTHOME_ENCRYPTED), bytes.fromhex(ble_vectors.BTHOME_MAC_ENCRYPTED)])
PVVX_SEEDS = [bytes.fromhex(case[2]) for case in ble_vectors.PVVX]
BTHOME_KEY = bytes.fromhex(ble_vectors.BTHOME_KEY)
BTHOME_MAC = bytes.fromhex(ble_vectors.BTHOME_MAC)


@FUZZ
@given(mutated(RUUVI_SEEDS + BTHOME_SEEDS + PVVX_SEEDS) | st.binary(max_size=64), st.booleans())
def test_ble_decoders(payload: bytes, keyed: bool) -> None:
    for decode in (lambda: ruuvi.decode(payload, "ble:x", 1.7e9), lambda: pvvx.decode(payload, "ble:x", 1.7e9),
                   lambda: bthome.decode(payload, BTHOME_MAC, "ble:x", 1.7e9, BTHOME_KEY if keyed else None)):
        try:
            decode()
        except BleDecodeError:
            pass


@FUZZ
@given(mutated(RUUVI_SEEDS), mutated(BTHOME_SEEDS), mutated(PVVX_SEEDS),
       st.sets(st.sampled_from(["ruuvi", "bthome", "pvvx"])), st.booleans())
def test_ble_advertisements(ruuvi_data: bytes, bthome_data: bytes, pvvx_data: bytes, present: set[str],
                            keyed: bool) -> None:
    mac = "54:48:E6:8F:80:A5"
    pipeline = AdvertisementPipeline(bthome_keys={mac: BTHOME_KEY} if keyed else None)
    manufacturer = {RUUVI_COMPANY_ID: ruuvi_data} if "ruuvi" in present else {}
    service = {uuid: data for name, uuid, data in (("bthome", BTHOME_UUID, bthome_data),
                                                   ("pvvx", ENVIRONMENTAL_SENSING_UUID, pvvx_data))
               if name in present}
    for _ in range(2):  # the second pass meets the dedup and replay state the first one left
        try:
            pipeline.process(mac, manufacturer, service, -70, 1.7e9)
        except BleDecodeError:
            pass


# --- the gateway's own inputs: replay files, batches, configuration ---------------------------

REPLAY_SEEDS = [b'{"device":"d1","metric":"temperature","value":21.5,"ts":1700000000}',
                b'{"device":"d1","metric":"connector_status","value":"Charging","ts":1700000000.5}']


@FUZZ
@given(st.lists(mutated(REPLAY_SEEDS) | nested_json(DEPTHS), min_size=1, max_size=4))
def test_replay_lines(lines: list[bytes]) -> None:
    handle, path = tempfile.mkstemp(suffix=".jsonl")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(b"\n".join(line.replace(b"\n", b" ") for line in lines))
        for row in iter_records(path):
            assert isinstance(row, (tuple, ReplayDecodeError))
    finally:
        os.unlink(path)


BATCH_SEEDS = [
    b'{"version":2,"gateway":"g","seq":1,"window":60,"series":[["d","temperature","C","gauge"]],'
    b'"windows":[[0,1700000000,3,0,20.5,21.0,20.8,20.9]],"states":[],"events":[]}',
    b'{"version":1,"gateway":"g","seq":1,"records":[],"events":[]}',
]


@FUZZ
@given(mutated(BATCH_SEEDS) | nested_json(DEPTHS) | st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b))
def test_batches(payload: bytes) -> None:
    try:
        decode_document(payload)
    except BatchDecodeError:
        pass


ENVELOPE_SEEDS = [msgspec.json.encode({"config": '[gateway]\nid = "gw-1"\n', "id": "c-1",
                                       "signature": base64.b64encode(bytes(64)).decode()})]


@FUZZ
@given(mutated(ENVELOPE_SEEDS) | nested_json(DEPTHS)
       | nested_json(DEPTHS).map(lambda inner: b'{"id":"c-1","extra":' + inner + b',"config":"","signature":""}'))
def test_remote_config_envelopes(payload: bytes) -> None:
    try:
        decode_envelope(payload)
    except Rejected:
        pass


ACK_SEEDS = [b'{"stream":"gw-1","ranges":[[1,5],[7,7]]}', b'{"stream":"gw-1","ranges":[]}']


@FUZZ
@given(mutated(ACK_SEEDS) | nested_json(DEPTHS)
       | nested_json(DEPTHS).map(lambda inner: b'{"stream":"s","ranges":[' + inner + b"]}"))
def test_platform_acknowledgements(payload: bytes) -> None:
    try:
        parse_platform_ack(payload)
    except ValueError:
        pass


CONFIG_SEEDS = [b'[gateway]\nid = "gw-1"\n[windows]\nwindow = 60\n[[drivers]]\ntype = "replay"\nname = "r"\n'
                b'file = "x.jsonl"\n[[uplinks]]\ntype = "file"\nname = "f"\npath = "out"\n']


@FUZZ
@given(mutated(CONFIG_SEEDS) | sized([0, 1, 4096], fill=(0x5B, 0x3D, 0x22)))
def test_config_texts(text: bytes) -> None:
    try:
        config_from_text(text, "fuzz.toml")
    except ConfigError:
        pass
