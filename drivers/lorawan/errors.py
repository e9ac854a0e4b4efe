"""The LoRaWAN driver's decode error: one short, stable cause token per kind of bad data."""

from __future__ import annotations

from gateway.errors import DecodeError

__all__ = ["LoRaWANDecodeError"]


class LoRaWANDecodeError(DecodeError):
    """Bytes heard on the air or read from a network server could not become readings.

    Causes used by this package (each one is a counter label): `truncated`, `bad_mhdr`,
    `bad_mic`, `unknown_devaddr`, `unknown_deveui`, `replay`, `bad_base64`, `bad_json`,
    `bad_udp`, `unknown_format`, `join_nonce_reused`, `codec_<name>`, `no_codec`,
    `unexpected_fport`; per value, the frame's other readings standing: `sensor_absent`,
    `unmapped_key`.
    """
