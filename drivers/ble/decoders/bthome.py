"""BTHome v2 service data (UUID 0xFCD2), plain and AES-CCM encrypted.

Spec: bthome.io/format ("BTHome Device Information", "Sensor data", "Binary sensor data",
"Events", "Device information" tables) and bthome.io/encryption. `payload` is the service data
after the UUID: one device-information byte, optionally the tag's 6-byte MAC (see below), then
objects (id byte + little-endian value), or, when encrypted, ciphertext + 4-byte counter +
4-byte MIC.

Device-information bit 1 says the tag's MAC (6 bytes, least significant first) precedes the
objects. The bthome.io format page lists the bit as reserved today; the bthome-ble reference
parser (github.com/Bluetooth-Devices/bthome-ble, src/bthome_ble/parser.py, `_is_mac_included`,
`_get_payload`, `get_nonce`) reads it, skips the MAC before the objects and, when encrypted,
builds the nonce from that MAC instead of the advertiser's address. This decoder does the same.

A tag with a bind key is trusted only through its encrypted advertisements: given a key, a
plain advertisement is refused (`bthome_unencrypted`), as the reference parser refuses one
("encryption downgrade"), so nobody nearby can inject plaintext readings for it.

The replay check on the counter needs the previous counter of the device, which is state; it
lives in `drivers.ble.dedup.ReplayGuard`, this module only returns the counter.
"""

from __future__ import annotations

import functools
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from drivers.ble.decoders import Decoded
from drivers.ble.errors import BleDecodeError
from gateway.model import Reading

__all__ = ["BUTTON_EVENTS", "OBJECTS", "decode", "encrypt"]

# Device information byte: bit 0 encryption, bit 1 MAC included (reference parser), bit 2
# trigger-based, bits 5-7 version.
_ENCRYPTED: Final = 0x01
_MAC_INCLUDED: Final = 0x02
_MAC_LEN: Final = 6
_VERSION_SHIFT: Final = 5
_UUID_LE: Final = b"\xd2\xfc"  # 0xFCD2 as transmitted, part of the nonce (bthome.io/encryption)
_MIC_LEN: Final = 4
_COUNTER_LEN: Final = 4
_VARIABLE: Final = -1  # text (0x53) and raw (0x54): first byte is the length


class Obj(NamedTuple):
    size: int  # bytes, or _VARIABLE
    signed: bool
    factor: float  # BTHome factor times the unit conversion to the catalog unit
    metric: str | None  # catalog metric, None when parsed only to step over it (see below)
    special: str = ""  # "button" or "dimmer": an event object, decoded by its own rule


def _o(size: int, factor: float = 1.0, metric: str | None = None, signed: bool = False, special: str = "") -> Obj:
    return Obj(size, signed, factor, metric, special)


def _flag(metric: str) -> Obj:
    # binary sensor objects (bthome.io/format "Binary sensor data"): one byte, 0 or 1 as sent
    return Obj(1, False, 1.0, metric)


_KWH_TO_WH: Final = 1000.0
_LB_TO_KG: Final = 0.45359237
_M3H_TO_LS: Final = 1000.0 / 3600.0  # m3/h -> l/s
_USCM_TO_SM: Final = 1e-4  # uS/cm -> S/m

# bthome.io/format, object id -> layout, sizes and factors as in the reference parser's table
# (github.com/Bluetooth-Devices/bthome-ble, src/bthome_ble/const.py `MEAS_TYPES`, commit
# d55bd3a). Every measurement has a catalog metric (docs/metrics.md); units converted to the
# catalog's: hPa -> Pa, kWh -> Wh, lb -> kg, mL -> l, m3/h -> l/s, uS/cm -> S/m. Stepped over
# on purpose (metric None), as they are no measurements: 0x00 packet id (the dedup key),
# 0x50 timestamp (the device clock), 0x53 text, 0x54 raw bytes, 0x60 channel (an index), 0xF0
# device type, 0xF1/0xF2 firmware version. An id missing here stops parsing ("objects must be
# ... parsed in order; an unknown id ends the packet").
OBJECTS: Final[dict[int, Obj]] = {
    0x00: _o(1),  # packet id (dedup key, not a reading)
    0x01: _o(1, 1, "battery"),  # %
    0x02: _o(2, 0.01, "temperature", signed=True),  # degC
    0x03: _o(2, 0.01, "humidity"),  # %
    0x04: _o(3, 1.0, "pressure"),  # 0.01 hPa = 1 Pa
    0x05: _o(3, 0.01, "illuminance"),  # lux
    0x06: _o(2, 0.01, "mass"),  # kg
    0x07: _o(2, 0.01 * _LB_TO_KG, "mass"),  # lb
    0x08: _o(2, 0.01, "dew_point", signed=True),  # degC
    0x09: _o(1, 1, "count"),
    0x0A: _o(3, 0.001 * _KWH_TO_WH, "energy"),  # kWh
    0x0B: _o(3, 0.01, "power"),  # W
    0x0C: _o(2, 0.001, "battery_voltage"),  # V, mV steps (tags report their battery here)
    0x0D: _o(2, 1, "pm2_5"),  # ug/m3
    0x0E: _o(2, 1, "pm10"),  # ug/m3
    0x0F: _flag("generic_boolean"),
    0x10: _flag("power_on"),
    0x11: _flag("opening"),
    0x12: _o(2, 1, "co2"),  # ppm
    0x13: _o(2, 1, "tvoc_mass"),  # ug/m3
    0x14: _o(2, 0.01, "soil_moisture"),  # %
    0x15: _flag("battery_low"),
    0x16: _flag("battery_charging"),
    0x17: _flag("co_detected"),
    0x18: _flag("cold"),
    0x19: _flag("connectivity"),
    0x1A: _flag("door_open"),
    0x1B: _flag("garage_door_open"),
    0x1C: _flag("gas_detected"),
    0x1D: _flag("heat"),
    0x1E: _flag("light_detected"),
    0x1F: _flag("unlocked"),
    0x20: _flag("moisture_detected"),
    0x21: _flag("motion"),
    0x22: _flag("moving"),
    0x23: _flag("occupancy"),
    0x24: _flag("plugged_in"),
    0x25: _flag("presence"),
    0x26: _flag("problem"),
    0x27: _flag("running"),
    0x28: _flag("safety"),
    0x29: _flag("smoke_detected"),
    0x2A: _flag("sound_detected"),
    0x2B: _flag("tamper"),
    0x2C: _flag("vibration"),
    0x2D: _flag("window_open"),
    0x2E: _o(1, 1, "humidity"),  # %
    0x2F: _o(1, 1, "soil_moisture"),  # %
    0x3A: _o(1, metric="button_event", special="button"),
    0x3C: _o(2, metric="dimmer_steps", special="dimmer"),
    0x3D: _o(2, 1, "count"),
    0x3E: _o(4, 1, "count"),
    0x3F: _o(2, 0.1, "rotation", signed=True),  # deg
    0x40: _o(2, 0.001, "distance"),  # mm -> m
    0x41: _o(2, 0.1, "distance"),  # m
    0x42: _o(3, 0.001, "duration"),  # s
    0x43: _o(2, 0.001, "current"),  # A
    0x44: _o(2, 0.01, "wind_speed"),  # speed m/s
    0x45: _o(2, 0.1, "temperature", signed=True),  # degC
    0x46: _o(1, 0.1, "uv_index"),
    0x47: _o(2, 0.1, "volume"),  # L
    0x48: _o(2, 0.001, "volume"),  # mL -> L
    0x49: _o(2, 0.001 * _M3H_TO_LS, "volume_flow_rate"),  # m3/h
    0x4A: _o(2, 0.1, "voltage"),  # V, 0.1 V steps (mains; the reference's own example is 231.7 V)
    0x4B: _o(3, 0.001, "gas_volume"),  # m3
    0x4C: _o(4, 0.001, "gas_volume"),  # m3
    0x4D: _o(4, 0.001 * _KWH_TO_WH, "energy"),  # kWh
    0x4E: _o(4, 0.001, "volume"),  # L
    0x4F: _o(4, 0.001, "water_volume"),  # L
    0x50: _o(4),  # timestamp (device clock, not a measurement)
    0x51: _o(2, 0.001, "acceleration"),  # m/s2
    0x52: _o(2, 0.001, "angular_velocity"),  # gyroscope deg/s
    0x53: _o(_VARIABLE),  # text
    0x54: _o(_VARIABLE),  # raw
    0x55: _o(4, 0.001, "volume_storage"),  # L
    0x56: _o(2, _USCM_TO_SM, "conductivity"),  # uS/cm
    0x57: _o(1, 1, "temperature", signed=True),  # degC
    0x58: _o(1, 0.35, "temperature", signed=True),  # degC
    0x59: _o(1, 1, "count", signed=True),
    0x5A: _o(2, 1, "count", signed=True),
    0x5B: _o(4, 1, "count", signed=True),
    0x5C: _o(4, 0.01, "power", signed=True),  # W
    0x5D: _o(2, 0.001, "current", signed=True),  # A
    0x5E: _o(2, 0.01, "wind_direction"),  # direction deg
    0x5F: _o(2, 0.1, "precipitation"),  # mm
    0x60: _o(1),  # channel (an index, not a measurement)
    0x61: _o(2, 1, "rotational_speed"),  # rpm
    0x62: _o(4, 0.000001, "wind_speed", signed=True),  # speed m/s
    0x63: _o(4, 0.000001, "acceleration", signed=True),  # m/s2
    0x64: _o(1, 1, "light_level"),
    0xF0: _o(2),  # device type id
    0xF1: _o(4),  # firmware version
    0xF2: _o(3),  # firmware version
}
# bthome.io/format "Events": button event byte -> state name (other values are not events).
BUTTON_EVENTS: Final[dict[int, str]] = {
    0x00: "none",
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
}
# dimmer event: first byte 0 none, 1 rotate left, 2 rotate right; second byte the steps
_DIMMER_SIGN: Final[dict[int, int]] = {0: 0, 1: -1, 2: 1}
_PACKET_ID: Final = 0x00


@functools.lru_cache(maxsize=256)
def _cipher(key: bytes) -> AESCCM:
    """AES-CCM with the 4-byte MIC of bthome.io/encryption; memoised per key (pure)."""
    return AESCCM(key, tag_length=_MIC_LEN)


def _nonce(mac: bytes, info: int, counter: bytes) -> bytes:
    # bthome.io/encryption: nonce = MAC (6) + UUID 0xFCD2 little-endian (2) + device
    # information byte (1) + counter as transmitted (4) = 13 bytes.
    return mac + _UUID_LE + bytes((info,)) + counter


def encrypt(plain_objects: bytes, key: bytes, mac: bytes, counter: int, info: int = 0x41) -> bytes:
    """Service data of an encrypted BTHome v2 advertisement (used by the simulator and tests).
    With the MAC-included bit set in `info`, `mac` is also carried before the ciphertext."""
    counter_bytes = counter.to_bytes(_COUNTER_LEN, "little")
    sealed = _cipher(key).encrypt(_nonce(mac, info, counter_bytes), plain_objects, None)
    carried = mac[::-1] if info & _MAC_INCLUDED else b""
    return bytes((info,)) + carried + sealed[:-_MIC_LEN] + counter_bytes + sealed[-_MIC_LEN:]


def _value(layout: Obj, raw_bytes: bytes) -> float | str | None:
    """An object's value in the catalog unit; None for an event byte outside the table."""
    if layout.special == "button":
        return BUTTON_EVENTS.get(raw_bytes[0])
    if layout.special == "dimmer":
        sign = _DIMMER_SIGN.get(raw_bytes[0])
        return None if sign is None else float(sign * raw_bytes[1])
    raw = int.from_bytes(raw_bytes, "little", signed=layout.signed)
    return round(raw * layout.factor, 9)


def _parse_objects(data: bytes, device: str, ts: float) -> tuple[int | None, list[Reading], int | None, int]:
    """(packet id, readings, first unknown object id, event objects whose value is outside the
    published table: no event to report, but counted, and their place still numbers the next
    sensor of the same kind)."""
    readings: list[Reading] = []
    unknown_events = 0
    occurrences: dict[str, int] = {}
    packet_id: int | None = None
    position, end = 0, len(data)
    while position < end:
        object_id = data[position]
        layout = OBJECTS.get(object_id)
        if layout is None:
            return packet_id, readings, object_id, unknown_events  # unknown id: length unknown, stop here
        position += 1
        size = layout.size
        if size == _VARIABLE:
            if position >= end:
                raise BleDecodeError("bthome_truncated", f"object 0x{object_id:02x} has no length", device=device)
            size = data[position]
            position += 1
        if position + size > end:
            raise BleDecodeError(
                "bthome_truncated", f"object 0x{object_id:02x} needs {size} bytes", device=device
            )
        if layout.metric is not None:
            value = _value(layout, data[position : position + size])
            metric = layout.metric
            # a metric again in one advertisement is another sensor of the tag (two probes,
            # three buttons): numbered by position like the reference parser (key_2, key_3)
            seen = occurrences.get(metric, 0) + 1
            occurrences[metric] = seen
            if value is None:
                unknown_events += 1
            else:
                readings.append(Reading(device if seen == 1 else f"{device}/{seen}", metric, value, ts))
        elif object_id == _PACKET_ID:
            packet_id = data[position]
        position += size
    return packet_id, readings, None, unknown_events


def decode(payload: bytes, mac: bytes, device: str, ts: float, key: bytes | None = None) -> Decoded:
    """Decode BTHome v2 service data. `mac` is the 6-byte advertiser address, most significant
    first; a MAC carried in the payload (device-information bit 1) takes its place in the nonce.
    `key` is the tag's bind key: with one, only encrypted advertisements are accepted."""
    if not payload:
        raise BleDecodeError("bthome_truncated", "empty service data", device=device)
    info = payload[0]
    if info >> _VERSION_SHIFT != 2:
        raise BleDecodeError("bthome_version", f"device information 0x{info:02x} is not v2", device=device)
    start = 1
    if info & _MAC_INCLUDED:
        start += _MAC_LEN
        if len(payload) < start:
            raise BleDecodeError("bthome_truncated", "MAC-included flag set, MAC cut short", device=device)
        mac = payload[1:start][::-1]  # transmitted least significant byte first
    if not info & _ENCRYPTED:
        if key is not None:
            raise BleDecodeError(
                "bthome_unencrypted", "plain advertisement from a tag with a bind key", device=device
            )
        packet_id, readings, unknown, unknown_events = _parse_objects(payload[start:], device, ts)
        return Decoded("bthome", packet_id, readings, None, unknown, unknown_events)
    if key is None:
        raise BleDecodeError("bthome_no_key", "encrypted advertisement and no key configured", device=device)
    if len(payload) < start + _COUNTER_LEN + _MIC_LEN:
        raise BleDecodeError("bthome_truncated", "encrypted payload shorter than counter + MIC", device=device)
    counter_bytes = payload[-_COUNTER_LEN - _MIC_LEN : -_MIC_LEN]
    ciphertext = payload[start : -_COUNTER_LEN - _MIC_LEN]
    try:
        plain = _cipher(key).decrypt(_nonce(mac, info, counter_bytes), ciphertext + payload[-_MIC_LEN:], None)
    except InvalidTag:
        raise BleDecodeError("bthome_bad_mic", "MIC check failed (wrong key or tampered)", device=device) from None
    packet_id, readings, unknown, unknown_events = _parse_objects(plain, device, ts)
    counter = int.from_bytes(counter_bytes, "little")
    return Decoded("bthome", packet_id, readings, counter, unknown, unknown_events)
