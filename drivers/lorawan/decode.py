"""Uplink -> readings, the pure part shared by both modes: codec choice, channels, link quality.

Devices: `lora:<deveui>` for the device's own values and its link quality. A codec or decoded
object that names a sensor channel (Cayenne LPP) keeps each channel its own series: a metric
the frame carries on more than one channel goes to `lora:<deveui>/<channel>` for each of them;
a metric on one channel only stays on `lora:<deveui>`, so the usual one-sensor-per-type LPP
device keeps plain device ids. With `split_channels` (config `channels = "split"`), every value
with a channel goes to `lora:<deveui>/<channel>`: stable for devices whose frames do not always
carry every probe.

Besides readings, decoding returns `problems`: counted causes for values that did not become
readings while the rest of the frame did (`sensor_absent`, `unmapped_key`, `no_codec`). A frame
that cannot be read at all raises `LoRaWANDecodeError` instead.

A key of the network server's decoded object that no catalog metric matches is `forwarded`
under `x_<snake_case key>` (gateway.model.forwarded_name; a nested key joins its parts, and a
Decentlab-style {"value": v, "unit": u} gives its unit): numbers and booleans (0/1), and text
(kept only where the config declares that name a state). The driver registers and counts them
(`unknown_metric_forwarded`). Lists, text nested deeper than MAX_FORWARD_DEPTH and keys past
MAX_FORWARDED per uplink stay counted as `unmapped_key`.
"""

from __future__ import annotations

import re
from typing import Any, Final, NamedTuple

from drivers.lorawan.codecs import CODECS, Measurement
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.network_server import NsUplink, decoded_object_split
from gateway.model import Reading, forwarded_name

__all__ = [
    "MAX_FORWARDED",
    "MAX_FORWARD_DEPTH",
    "Decoded",
    "decode_ns",
    "decode_payload",
    "ns_readings",
    "payload_readings",
]

# Bounds on what one uplink may forward outside the catalog (series are not free).
MAX_FORWARDED: Final = 32
MAX_FORWARD_DEPTH: Final = 3
_UNIT = re.compile(r"[!-~]{1,16}")


class Decoded(NamedTuple):
    readings: list[Reading]
    problems: list[LoRaWANDecodeError]  # each counted by the driver; the readings stand
    # measurements outside the catalog: (reading under its x_ name, unit or "")
    forwarded: list[tuple[Reading, str]] = []  # noqa: RUF012 - never mutated once built


def _flatten(key: str, value: Any, depth: int, out: list[tuple[str, float | str, str]]) -> bool:
    """Forwardable leaves of one unmapped value; False when nothing of it can travel."""
    if isinstance(value, bool):
        out.append((key, 1.0 if value else 0.0, ""))
    elif isinstance(value, (int, float)):
        out.append((key, float(value), ""))
    elif isinstance(value, str):
        out.append((key, value, ""))
    elif isinstance(value, dict) and value:
        number, unit = value.get("value"), value.get("unit")
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            out.append((key, float(number), unit if isinstance(unit, str) and _UNIT.fullmatch(unit) else ""))
        elif depth < MAX_FORWARD_DEPTH:
            found = False
            for inner, item in value.items():
                found = _flatten(f"{key}.{inner}", item, depth + 1, out) or found
            return found
        else:
            return False
    else:
        return False
    return True


def _forward(
    device: str, ts: float, unmapped: list[tuple[str, Any]], problems: list[LoRaWANDecodeError]
) -> list[tuple[Reading, str]]:
    forwarded: list[tuple[Reading, str]] = []
    for key, value in unmapped:
        leaves: list[tuple[str, float | str, str]] = []
        if not _flatten(key, value, 1, leaves) or len(forwarded) + len(leaves) > MAX_FORWARDED:
            problems.append(LoRaWANDecodeError("unmapped_key", key, device=device))
            continue
        forwarded.extend((Reading(device, forwarded_name(name), number, ts), unit) for name, number, unit in leaves)
    return forwarded


def _link(device: str, ts: float, rssi: float | None, snr: float | None, out: list[Reading]) -> None:
    # absent is absent: a packet without rssi or snr (FSK has no SNR) gives no such reading
    if rssi is not None:
        out.append(Reading(device, "rssi", float(rssi), ts))
    if snr is not None:
        out.append(Reading(device, "snr", float(snr), ts))


def _shared_metrics(measurements: list[Measurement]) -> set[str]:
    """Metrics the frame carries on more than one channel."""
    first: dict[str, int] = {}
    shared: set[str] = set()
    for metric, _, channel in measurements:
        if channel is None:
            continue
        seen = first.setdefault(metric, channel)
        if seen != channel:
            shared.add(metric)
    return shared


def _readings(
    device: str,
    ts: float,
    measurements: list[Measurement],
    split_channels: bool,
    problems: list[LoRaWANDecodeError],
) -> list[Reading]:
    shared = _shared_metrics(measurements) if not split_channels else set()
    out: list[Reading] = []
    for metric, value, channel in measurements:
        name = device
        if channel is not None and (split_channels or metric in shared):
            name = f"{device}/{channel}"
        if value is None:
            problems.append(LoRaWANDecodeError("sensor_absent", f"{metric}: the device reports no sensor", device=name))
            continue
        out.append(Reading(name, metric, value, ts))
    return out


def decode_payload(
    dev_eui: str,
    codec: str,
    payload: bytes,
    fport: int | None,
    ts: float,
    rssi: float | None,
    snr: float | None,
    *,
    split_channels: bool = False,
) -> Decoded:
    """Decode a cleartext FRMPayload with the named codec, plus link quality. A payload the codec
    rejects raises (the caller counts it); frames without application data (FPort 0, empty)
    give link quality only; application data without a codec gives link quality and a
    `no_codec` problem."""
    device = f"lora:{dev_eui}"
    problems: list[LoRaWANDecodeError] = []
    readings: list[Reading] = []
    if payload and fport:
        if codec:
            try:
                measurements = CODECS[codec](payload, fport)
            except LoRaWANDecodeError as error:
                error.device = error.device or device
                raise
            readings = _readings(device, ts, measurements, split_channels, problems)
        else:
            problems.append(LoRaWANDecodeError("no_codec", "payload without a codec or decoded object", device=device))
    _link(device, ts, rssi, snr, readings)
    return Decoded(readings, problems)


def payload_readings(
    dev_eui: str,
    codec: str,
    payload: bytes,
    fport: int | None,
    ts: float,
    rssi: float | None,
    snr: float | None,
) -> list[Reading]:
    """The readings of `decode_payload` alone (simulators and benchmarks count these)."""
    return decode_payload(dev_eui, codec, payload, fport, ts, rssi, snr).readings


def decode_ns(uplink: NsUplink, codec: str, use_decoded: bool, *, split_channels: bool = False) -> Decoded:
    """The network server's decoded object wins when allowed and it holds catalog values (its
    other keys are forwarded outside the catalog, see the module docstring); otherwise the
    payload is decoded here, and the object's keys are forwarded only if nothing decoded the
    payload in their place."""
    device = f"lora:{uplink.dev_eui}"
    ts = uplink.ts
    unmapped: list[tuple[str, Any]] = []
    if use_decoded and uplink.decoded:
        measurements, unmapped = decoded_object_split(uplink.decoded)
        if measurements:
            problems: list[LoRaWANDecodeError] = []
            forwarded = _forward(device, ts, unmapped, problems)
            readings = _readings(device, ts, measurements, split_channels, problems)
            _link(device, ts, uplink.rssi, uplink.snr, readings)
            return Decoded(readings, problems, forwarded)
    result = decode_payload(
        uplink.dev_eui, codec, uplink.payload or b"", uplink.fport, ts, uplink.rssi, uplink.snr,
        split_channels=split_channels,
    )
    if unmapped and not (codec and uplink.payload):  # the object's keys were not replaced by a decode here
        return Decoded(result.readings, result.problems, _forward(device, ts, unmapped, result.problems))
    return result


def ns_readings(uplink: NsUplink, codec: str, use_decoded: bool) -> list[Reading]:
    """The readings of `decode_ns` alone."""
    return decode_ns(uplink, codec, use_decoded).readings
