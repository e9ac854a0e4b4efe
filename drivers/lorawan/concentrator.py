"""Concentrator mode without a network server: the network-server jobs the gateway needs.

Sans-I/O: datagram contents, keys and times in; uplinks, join accepts or `LoRaWANDecodeError`
out. The driver owns sockets and timers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec

from drivers.lorawan import phy
from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.semtech_udp import RxPk, TxPk
from drivers.lorawan.sessions import KEEP_DEV_NONCES, Session, SessionStore, extend_fcnt

__all__ = ["Deduplicator", "Heard", "OtaaDevice", "Uplink", "accept_join", "join_txpk", "open_data_frame"]


class Uplink(msgspec.Struct, frozen=True, gc=False):
    dev_eui: str
    dev_addr: int
    fcnt: int  # 32-bit
    fport: int | None
    payload: bytes  # decrypted FRMPayload
    confirmed: bool


class OtaaDevice(msgspec.Struct, frozen=True):
    dev_eui: str
    app_key: bytes
    join_eui: int | None = None  # None: any AppEUI/JoinEUI accepted


def open_data_frame(raw: bytes, store: SessionStore) -> Uplink:
    """Parse, find the session, check the MIC (section 4.4) and the counter, decrypt (4.3.3)."""
    frame = phy.parse_data_frame(raw)
    mtype = frame.mtype
    if mtype not in (phy.MType.UNCONFIRMED_UP, phy.MType.CONFIRMED_UP):
        raise LoRaWANDecodeError("bad_mhdr", f"downlink MType {mtype} heard as an uplink")
    candidates = store.by_addr.get(frame.dev_addr)
    if not candidates:
        raise LoRaWANDecodeError("unknown_devaddr", f"DevAddr {frame.dev_addr:08x}")
    body = raw[:-4]
    for session in candidates:  # DevAddr is not unique across networks: the MIC decides
        fcnt = extend_fcnt(session.fcnt_up, frame.fcnt16)
        if phy.data_mic(session.nwk_key(), body, phy.UPLINK, frame.dev_addr, fcnt) == frame.mic:
            break
    else:
        # An old frame replayed after the 16-bit half wrapped verifies under the previous epoch.
        for session in candidates:
            older = extend_fcnt(session.fcnt_up, frame.fcnt16) - 0x10000
            if older >= 0 and phy.data_mic(session.nwk_key(), body, phy.UPLINK, frame.dev_addr, older) == frame.mic:
                raise LoRaWANDecodeError(
                    "replay", f"FCnt {older} <= last {session.fcnt_up}", device=f"lora:{session.dev_eui}"
                )
        raise LoRaWANDecodeError("bad_mic", f"DevAddr {frame.dev_addr:08x} FCnt {frame.fcnt16}")
    if fcnt <= session.fcnt_up:
        raise LoRaWANDecodeError(
            "replay", f"FCnt {fcnt} <= last {session.fcnt_up}", device=f"lora:{session.dev_eui}"
        )
    session.fcnt_up = fcnt
    store.touch()
    key = session.nwk_key() if frame.fport == 0 else session.app_key()
    payload = phy.crypt_frm_payload(key, frame.frm_payload, phy.UPLINK, frame.dev_addr, fcnt)
    return Uplink(session.dev_eui, frame.dev_addr, fcnt, frame.fport, payload, mtype == phy.MType.CONFIRMED_UP)


def accept_join(
    raw: bytes,
    devices: dict[str, OtaaDevice],
    store: SessionStore,
    *,
    net_id: int,
    random_bytes: Callable[[int], bytes],
    rx1_delay: int = 1,
) -> tuple[bytes, Session]:
    """Answer a valid JoinRequest (section 6.2.4) with an encrypted JoinAccept (6.2.5) and the
    new session (keys derived, counters reset). The caller persists the store."""
    request = phy.parse_join_request(raw)
    dev_eui = f"{request.dev_eui:016x}"
    device = devices.get(dev_eui)
    if device is None:
        raise LoRaWANDecodeError("unknown_deveui", f"join from DevEUI {dev_eui}")
    if device.join_eui is not None and device.join_eui != request.join_eui:
        raise LoRaWANDecodeError("unknown_deveui", f"JoinEUI {request.join_eui:016x}", device=f"lora:{dev_eui}")
    if phy.join_request_mic(device.app_key, raw[:-4]) != request.mic:
        raise LoRaWANDecodeError("bad_mic", "join request", device=f"lora:{dev_eui}")
    previous = store.by_eui.get(dev_eui)
    used = list(previous.dev_nonces) if previous is not None else []
    if request.dev_nonce in used:
        # Section 6.2.4: the server ignores a DevNonce the device used before (replayed join).
        raise LoRaWANDecodeError("join_nonce_reused", f"DevNonce {request.dev_nonce}", device=f"lora:{dev_eui}")
    used = (used + [request.dev_nonce])[-KEEP_DEV_NONCES:]
    app_nonce = int.from_bytes(random_bytes(3), "little")
    # DevAddr = NwkID (7 LSB of NetID) in the 7 MSB | NwkAddr (25 bits), section 6.1.1.
    nwk_addr = int.from_bytes(random_bytes(4), "little") & 0x01FFFFFF
    dev_addr = ((net_id & 0x7F) << 25) | nwk_addr
    nwk_skey, app_skey = phy.derive_session_keys(device.app_key, app_nonce, net_id, request.dev_nonce)
    session = Session(
        dev_eui=dev_eui,
        dev_addr=dev_addr,
        nwk_skey=nwk_skey.hex(),
        app_skey=app_skey.hex(),
        activation="otaa",
        dev_nonces=used,
    )
    store.put(session)
    accept = phy.build_join_accept(
        device.app_key, app_nonce=app_nonce, net_id=net_id, dev_addr=dev_addr, rx_delay=rx1_delay
    )
    return accept, session


def join_txpk(uplink: RxPk, accept: bytes, *, delay_us: int, power: int) -> TxPk:
    """The PULL_RESP for RX1 (regional parameters EU868: RX1 on the uplink frequency and data
    rate with RX1DROffset 0), timed on the concentrator's counter: tmst + JOIN_ACCEPT_DELAY1."""
    import base64

    return TxPk(
        imme=False,
        tmst=(uplink.tmst + delay_us) & 0xFFFFFFFF,
        freq=uplink.freq,
        rfch=0,
        powe=power,
        modu=uplink.modu,
        datr=uplink.datr,
        codr=uplink.codr,
        ipol=True,
        size=len(accept),
        data=base64.b64encode(accept).decode("ascii"),
    )


def _best(current: float | None, offered: float | None) -> float | None:
    """The better of two link values where either may be absent (None is never a value)."""
    if offered is None:
        return current
    if current is None or offered > current:
        return offered
    return current


def _rank(rxpk: RxPk) -> tuple[float, float]:
    """Order of gateways for the downlink: best RSSI, then best SNR; absent ranks last."""
    return (
        rxpk.rssi if rxpk.rssi is not None else float("-inf"),
        rxpk.lsnr if rxpk.lsnr is not None else float("-inf"),
    )


class Heard(msgspec.Struct, kw_only=True):
    """The best copy so far of one frame heard by one or more gateways."""

    rxpk: RxPk
    gateway_eui: int
    received: float  # local receive time of the first copy
    event_ts: float  # event time chosen for the readings
    rssi: float | None = None  # best over all copies that carried one; None: none did
    snr: float | None = None  # likewise (FSK copies carry no SNR)
    copies: int = 1

    def __post_init__(self) -> None:
        self.rssi = _best(self.rssi, self.rxpk.rssi)
        self.snr = _best(self.snr, self.rxpk.lsnr)


class Deduplicator:
    """Collapses copies of one PHYPayload heard by several gateways within `window` seconds
    (same bytes = same DevAddr, FCnt and payload). Copies after the window closed but within
    `memory` seconds are still recognised as duplicates, not counted as replays.

    Settled frames are remembered in a dict (lookup) and a queue in settling order (expiry):
    each `take` drops the expired head of the queue, so every frame costs O(1) however many
    are remembered, and at most `max_recent` are (the oldest go first; a late copy of one of
    those is then caught by the frame counter as a replay instead)."""

    def __init__(self, window: float, memory: float = 30.0, max_recent: int = 65536) -> None:
        self.window = window
        self.memory = max(memory, window)
        self.max_recent = max_recent
        self.pending: dict[bytes, Heard] = {}
        self._recent: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()

    @property
    def remembered(self) -> int:
        """Settled frames still recognised as duplicates."""
        return len(self._recent)

    def offer(self, raw: bytes, heard: Heard) -> bool:
        """True for the first copy (the caller schedules `take` after the window)."""
        current = self.pending.get(raw)
        if current is None:
            seen = self._recent.get(raw)
            if seen is not None and heard.received - seen <= self.memory:
                return False
            self.pending[raw] = heard
            return True
        current.copies += 1
        current.rssi = _best(current.rssi, heard.rxpk.rssi)
        current.snr = _best(current.snr, heard.rxpk.lsnr)
        # the downlink goes through the gateway that heard the frame best
        if _rank(heard.rxpk) > _rank(current.rxpk):
            current.rxpk, current.gateway_eui = heard.rxpk, heard.gateway_eui
        return False

    def take(self, raw: bytes, now: float) -> Heard | None:
        """The settled frame (None if it was taken already); remembers it for `memory` s."""
        heard = self.pending.pop(raw, None)
        if heard is not None:
            self._recent[raw] = now
            self._order.append((now, raw))
        order, recent = self._order, self._recent
        cutoff = now - self.memory
        # A clock stepped back leaves newer times ahead of older ones in the queue: those wait
        # for the head, and max_recent still bounds the memory meanwhile.
        while order and (order[0][0] < cutoff or len(order) > self.max_recent):
            settled, old = order.popleft()
            if recent.get(old) == settled:  # not settled again since (that entry is later)
                del recent[old]
        return heard


JOIN_ACCEPT_DELAY1_US: Final = 5_000_000
