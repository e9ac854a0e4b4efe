"""From one bleak advertisement to the readings to emit: classify, decode, replay check, dedup.

No I/O: the driver feeds it what bleak reported and emits what it returns; the benchmark runs
it in a loop. Which decoder handles which advertisement is the `_SERVICE_DECODERS` table plus
Ruuvi's manufacturer id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from drivers.ble.decoders import (
    BTHOME_UUID,
    ENVIRONMENTAL_SENSING_UUID,
    RUUVI_COMPANY_ID,
    Decoded,
    bthome,
    pvvx,
    ruuvi,
)
from drivers.ble.dedup import Deduplicator, ReplayGuard
from drivers.ble.errors import BleDecodeError
from gateway.model import Reading

__all__ = ["AdvertisementPipeline", "Outcome", "device_id", "mac_bytes"]


def device_id(mac: str) -> str:
    return "ble:" + mac.upper()


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


class Outcome:
    """Why an advertisement produced no readings (counter names for `ctx.count`)."""

    IGNORED: Final = "ignored_advertisements"  # no decoder recognised it, or not allowlisted
    DUPLICATE: Final = "duplicate_advertisements"
    UNKNOWN_OBJECT: Final = "bthome_unknown_objects"  # parsing stopped at an unknown object id
    UNKNOWN_EVENT: Final = "bthome_unknown_events"  # a button/dimmer event outside the table


class AdvertisementPipeline:
    """Per-driver state (dedup, replay) around the pure decoders."""

    def __init__(
        self,
        *,
        allow: frozenset[str] = frozenset(),
        bthome_keys: Mapping[str, bytes] | None = None,
        replay_guard: ReplayGuard | None = None,
        dedup: Deduplicator | None = None,
        emit_rssi: bool = True,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.allow = frozenset(mac.upper() for mac in allow)
        self.keys = {mac.upper(): key for mac, key in (bthome_keys or {}).items()}
        self.replay = replay_guard if replay_guard is not None else ReplayGuard()
        self.dedup = dedup if dedup is not None else Deduplicator()
        self._last_payload: dict[str, bytes] = {}  # MAC -> last decoded payload
        self.emit_rssi = emit_rssi
        self._count = count or (lambda name: None)
        self._bthome_decoder = self._bthome  # one bound method, compared by identity per advertisement
        self._service_decoders: dict[str, Callable[[bytes, str, str, float], Decoded]] = {
            BTHOME_UUID: self._bthome_decoder,
            ENVIRONMENTAL_SENSING_UUID: self._pvvx,
        }

    @staticmethod
    def _ruuvi(payload: bytes, mac: str, device: str, ts: float) -> Decoded:
        return ruuvi.decode(payload, device, ts)

    def _bthome(self, payload: bytes, mac: str, device: str, ts: float) -> Decoded:
        return bthome.decode(payload, mac_bytes(mac), device, ts, self.keys.get(mac))

    @staticmethod
    def _pvvx(payload: bytes, mac: str, device: str, ts: float) -> Decoded:
        return pvvx.decode(payload, device, ts)

    def process(
        self,
        mac: str,
        manufacturer_data: Mapping[int, bytes],
        service_data: Mapping[str, bytes],
        rssi: int | None,
        ts: float,
    ) -> tuple[str, list[Reading]]:
        """Return (outcome, readings): outcome is "" with readings to emit, else a counter name.

        Raises BleDecodeError for an advertisement a decoder claimed but could not decode
        (including a replayed encrypted BTHome counter, cause `bthome_replay`).
        """
        mac = mac.upper()
        if self.allow and mac not in self.allow:
            return Outcome.IGNORED, []
        payload: bytes | None = manufacturer_data.get(RUUVI_COMPANY_ID)
        decoder: Callable[[bytes, str, str, float], Decoded] | None = None
        if payload is not None:
            decoder = self._ruuvi
        else:
            for uuid, data in service_data.items():
                decoder = self._service_decoders.get(uuid)
                if decoder is not None:
                    payload = data
                    break
        if decoder is None or payload is None:
            return Outcome.IGNORED, []
        if decoder is not self._bthome_decoder and mac in self.keys:
            # A tag with a bind key is heard only through encrypted BTHome; any other format
            # carrying its address is refused (the BTHome decoder refuses plain BTHome too).
            payload = service_data.get(BTHOME_UUID)
            if payload is None:
                raise BleDecodeError(
                    "bthome_unencrypted", "unencrypted advertisement from a tag with a bind key",
                    device="ble:" + mac,
                )
            decoder = self._bthome_decoder
        # Fast path: BlueZ re-reports a device for every repeat and every RSSI change, with
        # the same payload; the same bytes cannot be a new measurement, so skip decoding.
        if self._last_payload.get(mac) == payload:
            return Outcome.DUPLICATE, []
        device = "ble:" + mac
        decoded = decoder(payload, mac, device, ts)
        identity: object = decoded.sequence
        if decoded.counter is not None:
            identity = decoded.counter
            if self.replay.last(device) == decoded.counter:
                return Outcome.DUPLICATE, []  # the last accepted advertisement, seen again
            if not self.replay.check(device, decoded.counter):
                raise BleDecodeError(
                    "bthome_replay",
                    f"counter {decoded.counter} not ahead of {self.replay.last(device)}",
                    device=device,
                )
        self._last_payload[mac] = payload
        if decoded.unknown_object is not None:
            self._count(Outcome.UNKNOWN_OBJECT)  # readings before it are still good
        for _ in range(decoded.unknown_events):
            self._count(Outcome.UNKNOWN_EVENT)
        if identity is None:
            identity = payload
        if not self.dedup.is_new(device, (decoded.format, identity)):
            return Outcome.DUPLICATE, []
        readings = decoded.readings
        if self.emit_rssi and rssi is not None and rssi > -127:  # bleak's -127 = unknown
            readings.append(Reading(device, "rssi", float(rssi), ts))
        return "", readings
