"""Decoders against published vectors (tests/drivers/ble/vectors.py cites each) and hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.ble.decoders import bthome, pvvx, ruuvi
from drivers.ble.errors import BleDecodeError
from gateway.model import CATALOG, Kind
from tests.drivers.ble import vectors as v

DEVICE = "ble:TEST"
TS = 1_700_000_000.0


def _values(decoded) -> dict[str, float]:
    values = {r.metric: r.value for r in decoded.readings}
    assert len(values) == len(decoded.readings), "a metric appeared twice"
    for r in decoded.readings:
        assert r.metric in CATALOG and r.device == DEVICE and r.ts == TS
    return values


@pytest.mark.parametrize("name,source,payload,sequence,expected", v.RUUVI, ids=[c[0] for c in v.RUUVI])
def test_ruuvi_published_vectors(name, source, payload, sequence, expected) -> None:
    decoded = ruuvi.decode(bytes.fromhex(payload), DEVICE, TS)
    assert decoded.sequence == sequence
    assert _values(decoded) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("name", "payload", "expected"), v.BTHOME_TABLE, ids=[c[0] for c in v.BTHOME_TABLE])
def test_bthome_reference_parser_table_vectors(name: str, payload: str, expected: list) -> None:
    """Every object of the BTHome v2 table the reference parser's tests cover, each field."""
    decoded = bthome.decode(bytes.fromhex(payload), b"\0" * 6, DEVICE, TS)
    got = [(r.device.removeprefix(DEVICE), r.metric, r.value) for r in decoded.readings]
    assert [g[:2] for g in got] == [e[:2] for e in expected], name
    for (_, _, value), (_, metric, want) in zip(got, expected, strict=True):
        assert value == (want if isinstance(want, str) else pytest.approx(want, abs=1e-6)), metric
    assert all(r.metric in CATALOG and r.ts == TS for r in decoded.readings)
    assert decoded.unknown_object is None


def test_every_bthome_object_has_a_catalog_metric_or_is_not_a_measurement() -> None:
    not_measurements = {0x00, 0x50, 0x53, 0x54, 0x60, 0xF0, 0xF1, 0xF2}
    for object_id, layout in bthome.OBJECTS.items():
        if object_id in not_measurements:
            assert layout.metric is None, hex(object_id)
        else:
            assert layout.metric in CATALOG, hex(object_id)
    # the binary sensor objects 0x0F..0x11 and 0x15..0x2D: one byte each, 0/1 as sent, and a
    # metric of their own (no two classes share a series)
    flags = [0x0F, 0x10, 0x11, *range(0x15, 0x2E)]
    assert len({bthome.OBJECTS[i].metric for i in flags}) == len(flags)
    for object_id in flags:
        for raw in (0, 1):
            (reading,) = bthome.decode(bytes((0x40, object_id, raw)), b"\0" * 6, DEVICE, TS).readings
            assert (reading.metric, reading.value) == (bthome.OBJECTS[object_id].metric, float(raw))


def test_bthome_event_byte_outside_the_table_gives_no_reading() -> None:
    decoded = bthome.decode(bytes.fromhex("403a09" "02ca09"), b"\0" * 6, DEVICE, TS)
    assert [(r.metric, r.value) for r in decoded.readings] == [("temperature", 25.06)]


@pytest.mark.parametrize("case", v.BTHOME, ids=[c[0] for c in v.BTHOME])
def test_bthome_published_vectors(case) -> None:
    name, source, payload, packet_id, expected, unknown = case
    decoded = bthome.decode(bytes.fromhex(payload), b"\0" * 6, DEVICE, TS)
    assert decoded.sequence == packet_id
    assert decoded.unknown_object == unknown
    assert decoded.counter is None
    assert _values(decoded) == pytest.approx(expected, abs=1e-6)


def test_bthome_encrypted_published_example() -> None:
    key, mac = bytes.fromhex(v.BTHOME_KEY), bytes.fromhex(v.BTHOME_MAC)
    decoded = bthome.decode(bytes.fromhex(v.BTHOME_ENCRYPTED), mac, DEVICE, TS, key)
    assert decoded.counter == v.BTHOME_ENCRYPTED_COUNTER
    assert _values(decoded) == pytest.approx(v.BTHOME_ENCRYPTED_VALUES)


def test_bthome_encrypted_with_mac_included_reference_example() -> None:
    key = bytes.fromhex(v.BTHOME_KEY)
    # The nonce takes the MAC carried in the payload: the advertiser address given here is
    # another one, and the MIC still holds.
    decoded = bthome.decode(bytes.fromhex(v.BTHOME_MAC_ENCRYPTED), b"\0" * 6, DEVICE, TS, key)
    assert decoded.counter == v.BTHOME_MAC_ENCRYPTED_COUNTER
    assert decoded.unknown_object is None and decoded.sequence is None
    assert _values(decoded) == pytest.approx(v.BTHOME_MAC_ENCRYPTED_VALUES)
    sealed = bthome.encrypt(bytes.fromhex("02CA0903BF13"), key, bytes.fromhex(v.BTHOME_MAC),
                            v.BTHOME_MAC_ENCRYPTED_COUNTER, info=0x43)
    assert sealed.hex().upper() == v.BTHOME_MAC_ENCRYPTED


@pytest.mark.parametrize("name", list(v.BTHOME_COUNTER_FRAMES))
def test_bthome_reference_counter_frames(name: str) -> None:
    _test, payload, counter = v.BTHOME_COUNTER_FRAMES[name]
    decoded = bthome.decode(bytes.fromhex(payload), bytes.fromhex(v.BTHOME_MAC), DEVICE, TS,
                            bytes.fromhex(v.BTHOME_KEY))
    assert decoded.counter == counter
    temperature = 25.07 if counter in (0, 2**32 - 1) else 25.06
    assert _values(decoded) == pytest.approx({"temperature": temperature, "humidity": 50.55})


def test_bthome_encrypt_reproduces_published_example() -> None:
    key, mac = bytes.fromhex(v.BTHOME_KEY), bytes.fromhex(v.BTHOME_MAC)
    sealed = bthome.encrypt(bytes.fromhex("02CA0903BF13"), key, mac, v.BTHOME_ENCRYPTED_COUNTER)
    assert sealed.hex() == v.BTHOME_ENCRYPTED


@pytest.mark.parametrize(
    "key,mac,cause",
    [
        (None, v.BTHOME_MAC, "bthome_no_key"),
        ("00" * 16, v.BTHOME_MAC, "bthome_bad_mic"),  # wrong key
        (v.BTHOME_KEY, "5448E68F80A6", "bthome_bad_mic"),  # right key, another tag's MAC
    ],
)
def test_bthome_encrypted_rejects(key, mac, cause) -> None:
    with pytest.raises(BleDecodeError) as info:
        bthome.decode(
            bytes.fromhex(v.BTHOME_ENCRYPTED), bytes.fromhex(mac), DEVICE, TS,
            bytes.fromhex(key) if key else None,
        )
    assert info.value.cause == cause


def test_bthome_plain_frame_from_a_tag_with_a_bind_key_is_refused() -> None:
    """bthome-ble test_encryption_no_key_needed / test_encryption_downgrade_fails."""
    payload, mac = bytes.fromhex(v.BTHOME_DOWNGRADE_PLAIN), bytes.fromhex(v.BTHOME_DOWNGRADE_MAC)
    decoded = bthome.decode(payload, mac, DEVICE, TS)
    assert decoded.counter is None and decoded.sequence is None
    assert _values(decoded) == pytest.approx(v.BTHOME_DOWNGRADE_VALUES)
    with pytest.raises(BleDecodeError) as info:
        bthome.decode(payload, mac, DEVICE, TS, bytes.fromhex(v.BTHOME_DOWNGRADE_KEY))
    assert info.value.cause == "bthome_unencrypted" and info.value.device == DEVICE
    # The MAC-included plain form is refused the same way.
    with pytest.raises(BleDecodeError) as info:
        bthome.decode(bytes.fromhex(v.BTHOME[-1][2]), mac, DEVICE, TS, bytes.fromhex(v.BTHOME_DOWNGRADE_KEY))
    assert info.value.cause == "bthome_unencrypted"


def test_bthome_tampered_ciphertext_fails_mic() -> None:
    payload = bytearray(bytes.fromhex(v.BTHOME_ENCRYPTED))
    payload[2] ^= 0x01
    with pytest.raises(BleDecodeError) as info:
        bthome.decode(bytes(payload), bytes.fromhex(v.BTHOME_MAC), DEVICE, TS, bytes.fromhex(v.BTHOME_KEY))
    assert info.value.cause == "bthome_bad_mic"


@pytest.mark.parametrize(
    "payload,cause",
    [("", "bthome_truncated"), ("20" "02CA09", "bthome_version"), ("40" "02CA", "bthome_truncated"),
     ("41" "0011", "bthome_truncated"), ("40" "53", "bthome_truncated"),
     ("42" "B2188D38C1", "bthome_truncated"),  # MAC-included flag, 5 of 6 MAC bytes
     ("43" "A5808FE64854" "00112233F08ECB", "bthome_truncated")],  # MAC, then under counter + MIC
)
def test_bthome_bad_frames(payload, cause) -> None:
    key = b"\1" * 16 if int(payload[:2] or "0", 16) & 1 else None
    with pytest.raises(BleDecodeError) as info:
        bthome.decode(bytes.fromhex(payload), b"\0" * 6, DEVICE, TS, key)
    assert info.value.cause == cause


@pytest.mark.parametrize("case", v.PVVX, ids=[c[0] for c in v.PVVX])
def test_pvvx_readme_layouts(case) -> None:
    name, source, payload, fmt, counter, expected = case
    decoded = pvvx.decode(bytes.fromhex(payload), DEVICE, TS)
    assert (decoded.format, decoded.sequence) == (fmt, counter)
    assert _values(decoded) == pytest.approx(expected)


@pytest.mark.parametrize(
    "module,payload,cause",
    [(ruuvi, "", "ruuvi_length"), (ruuvi, "0512FC", "ruuvi_length"), (ruuvi, "04" + "00" * 17, "ruuvi_format"),
     (ruuvi, "03" + "00" * 14, "ruuvi_length"), (pvvx, "00" * 14, "pvvx_length")],
)
def test_short_or_unknown_frames(module, payload, cause) -> None:
    with pytest.raises(BleDecodeError) as info:
        module.decode(bytes.fromhex(payload), DEVICE, TS)
    assert info.value.cause == cause


def _only_own_errors(call) -> None:
    try:
        decoded = call()
    except BleDecodeError:
        return
    for reading in decoded.readings:
        assert reading.metric in CATALOG
        if CATALOG[reading.metric].kind == Kind.STATE:  # button and dimmer events are named states
            assert isinstance(reading.value, str) and reading.value
        else:
            assert isinstance(reading.value, float) or isinstance(reading.value, int)


@given(st.binary(max_size=40))
def test_ruuvi_arbitrary_bytes(data: bytes) -> None:
    _only_own_errors(lambda: ruuvi.decode(data, DEVICE, TS))


@given(st.binary(max_size=40))
def test_pvvx_arbitrary_bytes(data: bytes) -> None:
    _only_own_errors(lambda: pvvx.decode(data, DEVICE, TS))


@given(st.binary(max_size=40), st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
def test_bthome_arbitrary_bytes(data: bytes, key: bytes | None) -> None:
    _only_own_errors(lambda: bthome.decode(data, b"\x01\x02\x03\x04\x05\x06", DEVICE, TS, key))


@given(st.binary(max_size=30))
@example(b":\x00\x00\x00")  # a button event (0x3A) "none": a state, its value a name
def test_bthome_arbitrary_objects_after_v2_header(data: bytes) -> None:
    _only_own_errors(lambda: bthome.decode(b"\x40" + data, b"\0" * 6, DEVICE, TS))


@given(st.binary(max_size=30))
def test_bthome_arbitrary_objects_after_mac(data: bytes) -> None:
    _only_own_errors(lambda: bthome.decode(b"\x42" + data, b"\0" * 6, DEVICE, TS))


@given(st.binary(max_size=20), st.integers(0, 2**32 - 1), st.binary(min_size=16, max_size=16),
       st.sampled_from([0x41, 0x43, 0x45]))
def test_bthome_encrypt_decrypt_round_trip(objects: bytes, counter: int, key: bytes, info: int) -> None:
    mac = b"\xaa\xbb\xcc\xdd\xee\xff"
    sealed = bthome.encrypt(objects, key, mac, counter, info=info)
    try:
        decoded = bthome.decode(sealed, mac, DEVICE, TS, key)
    except BleDecodeError as error:
        assert error.cause == "bthome_truncated"  # random objects may end mid-value
        return
    assert decoded.counter == counter


def test_bthome_event_outside_the_table_is_counted_and_keeps_its_place() -> None:
    # two buttons (object 0x3A twice): the first says 0x7F, which bthome.io/format's event table
    # does not have; the second says "press" (0x01) and is still the tag's second button
    decoded = bthome.decode(bytes.fromhex("40" "3A7F" "3A01"), b"\0" * 6, DEVICE, TS)
    assert decoded.unknown_events == 1
    assert [(r.device, r.metric, r.value) for r in decoded.readings] == [(f"{DEVICE}/2", "button_event", "press")]
