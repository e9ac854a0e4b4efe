"""Uplink -> readings, the pure part shared by both modes: codec choice, link quality."""

from __future__ import annotations

from drivers.lorawan.codecs import CODECS
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.network_server import NsUplink, decoded_object_measurements
from gateway.model import Reading

__all__ = ["ns_readings", "payload_readings"]


def _link(device: str, ts: float, rssi: float | None, snr: float | None) -> list[Reading]:
    out = []
    if rssi is not None:
        out.append(Reading(device, "rssi", float(rssi), ts))
    if snr is not None:
        out.append(Reading(device, "snr", float(snr), ts))
    return out


def payload_readings(
    dev_eui: str,
    codec: str,
    payload: bytes,
    fport: int | None,
    ts: float,
    rssi: float | None,
    snr: float | None,
) -> list[Reading]:
    """Decode a cleartext FRMPayload with the named codec, plus link quality. A payload the codec
    rejects raises (the caller counts it); frames without application data (FPort 0, empty,
    no codec) still give link quality."""
    device = f"lora:{dev_eui}"
    readings: list[Reading] = []
    if codec and payload and fport:
        try:
            measurements = CODECS[codec](payload, fport)
        except LoRaWANDecodeError as error:
            error.device = error.device or device
            raise
        readings = [Reading(device, metric, value, ts) for metric, value in measurements]
    readings.extend(_link(device, ts, rssi, snr))
    return readings


def ns_readings(uplink: NsUplink, codec: str, use_decoded: bool) -> list[Reading]:
    """The network server's decoded object wins when allowed and it holds catalog values;
    otherwise the payload is decoded here."""
    device = f"lora:{uplink.dev_eui}"
    if use_decoded and uplink.decoded:
        measurements = decoded_object_measurements(uplink.decoded)
        if measurements:
            ts = uplink.ts
            readings = [Reading(device, metric, value, ts) for metric, value in measurements]
            if uplink.rssi is not None or uplink.snr is not None:
                readings.extend(_link(device, ts, uplink.rssi, uplink.snr))
            return readings
    if uplink.payload and not codec:
        raise LoRaWANDecodeError("no_codec", "payload without a codec or decoded object", device=device)
    return payload_readings(uplink.dev_eui, codec, uplink.payload or b"", uplink.fport, uplink.ts, uplink.rssi, uplink.snr)
