"""The BLE driver's decode error (gateway.errors.DecodeError with a stable `cause` token)."""

from __future__ import annotations

from gateway.errors import DecodeError

__all__ = ["BleDecodeError"]


class BleDecodeError(DecodeError):
    """An advertisement a decoder claimed could not be turned into readings.

    Causes: ruuvi_length, ruuvi_format, bthome_version, bthome_truncated, bthome_no_key,
    bthome_bad_mic, bthome_replay, bthome_unencrypted, pvvx_length.
    """
