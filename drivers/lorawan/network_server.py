"""Uplink events of network-server MQTT integrations, parsed into one neutral shape.

- ChirpStack v4: topic `application/<id>/device/<devEui>/event/up`, JSON marshaler
  (chirpstack.io docs, Integrations > Events > "up"): `deviceInfo.devEui`, `time`, `fCnt`,
  `fPort`, `data` (base64), `object` (codec output), `rxInfo[].rssi/.snr`.
- ChirpStack v3: topic `application/<id>/device/<devEUI>/rx` (or `.../event/up`): `devEUI`,
  `fCnt`, `fPort`, `data`, `object` or `objectJSON` (a JSON string), `rxInfo[].rssi/.loRaSNR`,
  `rxInfo[].time`.
- The Things Stack v3: topic `v3/<app>@<tenant>/devices/<dev>/up`: `end_device_ids.dev_eui`,
  `received_at`, `uplink_message.{f_port,f_cnt,frm_payload,decoded_payload,rx_metadata[]}`.
Every field may be missing; defaults apply. Pure: JSON bytes and receive time in.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any, Final

import msgspec

from drivers.lorawan.codecs.measurement import Measurement
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.json_limits import check_json

__all__ = [
    "MAX_UPLINK_BYTES",
    "NsUplink",
    "decoded_object_measurements",
    "decoded_object_split",
    "parse_iso_time",
    "parse_uplink",
]

# Largest uplink event accepted. Real ones are 1-3 KB (a few gateways in rxInfo, a codec object);
# 64 KiB leaves room for dozens of gateways and stays far from a memory problem.
MAX_UPLINK_BYTES: Final = 65536


class NsUplink(msgspec.Struct, kw_only=True):
    dev_eui: str  # lower-case hex, 16 digits
    ts: float  # event time: the network server's time field, else the receive time
    fport: int | None = None
    fcnt: int | None = None
    payload: bytes | None = None
    decoded: dict[str, Any] | None = None
    rssi: float | None = None  # best over the gateways that heard it
    snr: float | None = None
    source: str = ""  # "chirpstack_v4", "chirpstack_v3", "tts_v3"


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def _keep_microseconds(match: re.Match[str]) -> str:
    return match.group(1)


def parse_iso_time(text: Any) -> float | None:
    """RFC 3339 with nanoseconds (Go's format) or 'Z'; None when unusable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        # Fast path, once per uplink: Python 3.11's parser takes 'Z' and truncates a fraction
        # longer than six digits itself, the same result the normalisation below gives.
        moment = datetime.fromisoformat(text)
    except ValueError:
        cleaned = _FRACTION.sub(_keep_microseconds, text.strip()).replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(cleaned)
        except ValueError:
            return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def _b64(text: Any) -> bytes | None:
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise LoRaWANDecodeError("bad_base64", f"payload is a {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LoRaWANDecodeError("bad_base64", "payload is not base64") from None


_EUI_HEX = re.compile(r"[0-9a-f]{16}")


def _eui(value: Any) -> str:
    if isinstance(value, str):
        if len(value) == 16 and _EUI_HEX.fullmatch(value):
            return value  # the usual form, already normalised
        text = value.strip().lower().replace("-", "").replace(":", "")
        if _EUI_HEX.fullmatch(text):
            return text
        try:  # ChirpStack v3 protobuf-JSON gives base64 EUIs
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 8:
            return raw.hex()
    raise LoRaWANDecodeError("unknown_deveui", f"DevEUI {value!r} is not 8 bytes")


def _best_link(rx: Any, rssi_keys: tuple[str, ...], snr_keys: tuple[str, ...]) -> tuple[float | None, float | None]:
    best_rssi: float | None = None
    best_snr: float | None = None
    if not isinstance(rx, list):
        return None, None
    for item in rx:
        if not isinstance(item, dict):
            continue
        rssi = next((item[k] for k in rssi_keys if isinstance(item.get(k), (int, float))), None)
        snr = next((item[k] for k in snr_keys if isinstance(item.get(k), (int, float))), None)
        if rssi is not None and (best_rssi is None or rssi > best_rssi):
            best_rssi, best_snr = float(rssi), (float(snr) if snr is not None else best_snr)
        elif best_rssi is None and snr is not None and (best_snr is None or snr > best_snr):
            best_snr = float(snr)
    return best_rssi, best_snr


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and value else None


def _chirpstack_v4(doc: dict[str, Any], received: float) -> NsUplink:
    info = doc.get("deviceInfo") or {}
    rx = doc.get("rxInfo")
    rssi, snr = _best_link(rx, ("rssi",), ("snr",)) if rx else (None, None)
    data = doc.get("data")
    return NsUplink(
        dev_eui=_eui(info.get("devEui") if isinstance(info, dict) else None),
        ts=parse_iso_time(doc.get("time")) or received,
        fport=_int(doc.get("fPort")),
        fcnt=_int(doc.get("fCnt")),
        payload=_b64(data) if data is not None else None,
        decoded=_dict(doc.get("object")),
        rssi=rssi,
        snr=snr,
        source="chirpstack_v4",
    )


def _chirpstack_v3(doc: dict[str, Any], received: float) -> NsUplink:
    rx = doc.get("rxInfo")
    rssi, snr = _best_link(rx, ("rssi",), ("loRaSNR", "snr"))
    decoded = _dict(doc.get("object"))
    if decoded is None and isinstance(doc.get("objectJSON"), str) and doc["objectJSON"]:
        text = doc["objectJSON"].encode("utf-8", "replace")
        check_json(text, max_bytes=MAX_UPLINK_BYTES, what="objectJSON")  # a document inside a string
        try:
            decoded = _dict(msgspec.json.decode(text))
        except (msgspec.DecodeError, UnicodeDecodeError):
            decoded = None
    times = [parse_iso_time(r.get("time")) for r in rx if isinstance(r, dict)] if isinstance(rx, list) else []
    known = [t for t in times if t is not None]
    return NsUplink(
        dev_eui=_eui(doc.get("devEUI")),
        ts=min(known) if known else (parse_iso_time(doc.get("publishedAt")) or received),
        fport=_int(doc.get("fPort")),
        fcnt=_int(doc.get("fCnt")),
        payload=_b64(doc.get("data")),
        decoded=decoded,
        rssi=rssi,
        snr=snr,
        source="chirpstack_v3",
    )


def _tts_v3(doc: dict[str, Any], received: float) -> NsUplink:
    ids = doc.get("end_device_ids") or {}
    up = doc.get("uplink_message") or {}
    if not isinstance(up, dict) or not isinstance(ids, dict):
        raise LoRaWANDecodeError("unknown_format", "TTS message without uplink_message")
    rssi, snr = _best_link(up.get("rx_metadata"), ("rssi", "channel_rssi"), ("snr",))
    return NsUplink(
        dev_eui=_eui(ids.get("dev_eui")),
        ts=parse_iso_time(up.get("received_at")) or parse_iso_time(doc.get("received_at")) or received,
        fport=_int(up.get("f_port")),
        fcnt=_int(up.get("f_cnt")),
        payload=_b64(up.get("frm_payload")),
        decoded=_dict(up.get("decoded_payload")),
        rssi=rssi,
        snr=snr,
        source="tts_v3",
    )


_FORMATS: Final = {"chirpstack_v4": _chirpstack_v4, "chirpstack_v3": _chirpstack_v3, "tts_v3": _tts_v3}


def _detect(doc: dict[str, Any]) -> str:
    if "deviceInfo" in doc:
        return "chirpstack_v4"
    if "end_device_ids" in doc:
        return "tts_v3"
    if "devEUI" in doc or "applicationID" in doc:
        return "chirpstack_v3"
    raise LoRaWANDecodeError("unknown_format", "neither ChirpStack v3/v4 nor TTS v3 uplink JSON")


def parse_uplink(body: bytes, received: float, fmt: str = "auto") -> NsUplink:
    """One MQTT message body -> NsUplink. `fmt` is "auto" or a key of the format table."""
    check_json(body, max_bytes=MAX_UPLINK_BYTES, what="uplink")
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise LoRaWANDecodeError("bad_json", "uplink is not JSON") from None
    if not isinstance(doc, dict):
        raise LoRaWANDecodeError("bad_json", "uplink JSON is not an object")
    name = _detect(doc) if fmt == "auto" else fmt
    return _FORMATS[name](doc, received)


_G: Final = 9.80665  # standard gravity: LPP accelerometers report G, the catalog wants m/s2

# Network-server codec output (`object` / `decoded_payload`) -> catalog metric and factor.
# Keys are matched as given, then lower-cased, then with a trailing channel suffix
# ("temperature_3", the shape of The Things Stack's CayenneLPP formatter) taken as the channel.
_OBJECT_KEYS: Final[dict[str, tuple[str, float]]] = {
    "temperature": ("temperature", 1.0),
    "temp": ("temperature", 1.0),
    "tempc_sht": ("temperature", 1.0),
    "temperature_external": ("temperature_external", 1.0),
    "tempc_ds": ("temperature_external", 1.0),
    "exttemperature": ("temperature_external", 1.0),
    "humidity": ("humidity", 1.0),
    "relative_humidity": ("humidity", 1.0),
    "hum_sht": ("humidity", 1.0),
    "co2": ("co2", 1.0),
    "tvoc": ("tvoc", 1.0),
    "pressure": ("pressure", 100.0),  # decoders publish hPa
    "barometric_pressure": ("pressure", 100.0),
    "light": ("illuminance", 1.0),
    "illuminance": ("illuminance", 1.0),
    "illumination": ("illuminance", 1.0),
    "luminosity": ("illuminance", 1.0),
    "presence": ("occupancy", 0.0),  # 0/1 flag, see _FLAGS
    "battery": ("battery", 1.0),  # percent
    "batv": ("battery_voltage", 1.0),
    "battery_voltage": ("battery_voltage", 1.0),
    "vdd": ("battery_voltage", 0.001),  # Elsys: mV
    "pm2_5": ("pm2_5", 1.0),
    "pm10": ("pm10", 1.0),
    "air_temperature": ("temperature", 1.0),
    "air_humidity": ("humidity", 1.0),
}
# ChirpStack's built-in Cayenne LPP codec (v3 application server and v4): one key per LPP type,
# each a map from channel ("3") to value (chirpstack-application-server docs
# integrations/mqtt.md example: {"temperatureSensor": {"1": 25}, "humiditySensor": {"1": 32}};
# field names of its cayennelpp codec). Values are in LPP units: degC, %RH, lux, hPa, G.
_LPP_OBJECT_KEYS: Final[dict[str, tuple[str, float]]] = {
    "temperatureSensor": ("temperature", 1.0),
    "humiditySensor": ("humidity", 1.0),
    "illuminanceSensor": ("illuminance", 1.0),
    "presenceSensor": ("occupancy", 0.0),
    "barometer": ("pressure", 100.0),
    "digitalInput": ("digital_input", 1.0),
    "digitalOutput": ("digital_output", 1.0),
    "analogInput": ("analog_input", 1.0),
    "analogOutput": ("analog_output", 1.0),
}
# per-channel maps of named parts: ChirpStack "gpsLocation" {"1": {"latitude": .., "longitude":
# .., "altitude": ..}} (degrees, metres) and "gyrometer" {"1": {"x": .., "y": .., "z": ..}} (deg/s)
_PARTS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "gpsLocation": (("latitude", "latitude"), ("longitude", "longitude"), ("altitude", "altitude")),
    "gyrometer": (("x", "angular_velocity_x"), ("y", "angular_velocity_y"), ("z", "angular_velocity_z")),
}
# per-axis maps {"x": .., "y": .., "z": ..} in G: ChirpStack "accelerometer", TTS "accelerometer_N"
_AXES: Final = (("x", "acceleration_x"), ("y", "acceleration_y"), ("z", "acceleration_z"))
_FLAGS: Final = frozenset({"occupancy"})  # catalog 0/1 metrics: any non-zero value is 1
_CHANNEL_SUFFIX = re.compile(r"^(.*)_([0-9]{1,3})$")


def _number(value: Any) -> float | None:
    if isinstance(value, dict) and "value" in value:  # Decentlab-style {"value": x, "unit": ".."}
        value = value["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _scaled(metric: str, factor: float, value: float) -> float:
    return (1.0 if value else 0.0) if metric in _FLAGS else value * factor


def _channel(text: str) -> int | None:
    # ASCII only: str.isdigit() also takes "²", which int() refuses
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None


def _axes(value: Any, channel: int | None, out: list[Measurement]) -> bool:
    if not isinstance(value, dict):
        return False
    found = [(metric, _number(value.get(axis))) for axis, metric in _AXES]
    if any(v is None for _, v in found):
        return False
    out.extend(Measurement(metric, v * _G, channel) for metric, v in found if v is not None)
    return True


def _parts(value: Any, channel: int, parts: tuple[tuple[str, str], ...], out: list[Measurement]) -> bool:
    if not isinstance(value, dict):
        return False
    found = [(metric, _number(value.get(part))) for part, metric in parts]
    if any(v is None for _, v in found):
        return False
    out.extend(Measurement(metric, v, channel) for metric, v in found if v is not None)
    return True


def decoded_object_measurements(decoded: dict[str, Any]) -> tuple[list[Measurement], list[str]]:
    """Catalog measurements found in a network server's decoded object, and the keys that gave
    none (unknown names, or values that are not numbers): the caller counts those, so nothing
    the network server decoded vanishes uncounted."""
    out, unmapped = decoded_object_split(decoded)
    return out, [key for key, _ in unmapped]


def decoded_object_split(decoded: dict[str, Any]) -> tuple[list[Measurement], list[tuple[str, Any]]]:
    """Like `decoded_object_measurements`, with each unmapped key's value (for forwarding it
    outside the catalog); a nested key is `outer.inner`."""
    out: list[Measurement] = []
    unmapped: list[tuple[str, Any]] = []
    for key, value in decoded.items():
        lpp = _LPP_OBJECT_KEYS.get(key)
        parts = _PARTS.get(key)
        if lpp is not None or parts is not None or key == "accelerometer":
            if not isinstance(value, dict) or not value:
                unmapped.append((key, value))
                continue
            for text, item in value.items():
                channel = _channel(text)
                if lpp is None:
                    if channel is None or not (
                        _parts(item, channel, parts, out) if parts is not None else _axes(item, channel, out)
                    ):
                        unmapped.append((f"{key}.{text}", item))
                    continue
                number = _number(item)
                if channel is None or number is None:
                    unmapped.append((f"{key}.{text}", item))
                    continue
                out.append(Measurement(lpp[0], _scaled(lpp[0], lpp[1], number), channel))
            continue
        # table keys are lower case: an exact hit needs no lower() or suffix match
        channel = None
        row = _OBJECT_KEYS.get(key)
        if row is None:
            name = key.lower()
            row = _OBJECT_KEYS.get(name)
            if row is None:
                match = _CHANNEL_SUFFIX.match(name)
                if match is not None:
                    if match.group(1) == "accelerometer" and _axes(value, int(match.group(2)), out):
                        continue
                    row = _OBJECT_KEYS.get(match.group(1))
                    channel = int(match.group(2))
        number = _number(value) if row is not None else None
        if row is None or number is None:
            unmapped.append((key, value))
            continue
        out.append(Measurement(row[0], _scaled(row[0], row[1], number), channel))
    return out, unmapped
