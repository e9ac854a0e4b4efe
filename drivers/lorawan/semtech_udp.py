"""Semtech UDP packet-forwarder protocol, version 2 (lora_pkt_fwd PROTOCOL.TXT, sections 3-6).

Every datagram: protocol version (1) = 2 | random token (2) | identifier (1) | ...
  PUSH_DATA 0x00  + gateway EUI (8) + JSON {"rxpk": [...], "stat": {...}}   forwarder -> server
  PUSH_ACK  0x01                                                              server -> forwarder
  PULL_DATA 0x02  + gateway EUI (8)                                           forwarder -> server
  PULL_RESP 0x03  + JSON {"txpk": {...}}                                      server -> forwarder
  PULL_ACK  0x04                                                              server -> forwarder
  TX_ACK    0x05  + gateway EUI (8) + optional JSON {"txpk_ack": {...}}       forwarder -> server
Pure parsing and building; `LoRaWANDecodeError("bad_udp", ...)` on anything malformed.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final

import msgspec

from drivers.lorawan.errors import LoRaWANDecodeError
from drivers.lorawan.json_limits import check_json

__all__ = [
    "MAX_DATAGRAM",
    "PROTOCOL_VERSION",
    "Datagram",
    "Ident",
    "RxPk",
    "TxPk",
    "build_pull_ack",
    "build_pull_data",
    "build_pull_resp",
    "build_push_ack",
    "build_push_data",
    "build_tx_ack",
    "parse_datagram",
]

PROTOCOL_VERSION: Final = 2
# The largest UDP payload over IPv4 (65,535 - 8 - 20): no real datagram is longer, and this
# pure parser refuses longer input too, whoever hands it over.
MAX_DATAGRAM: Final = 65507


class Ident(enum.IntEnum):
    PUSH_DATA = 0x00
    PUSH_ACK = 0x01
    PULL_DATA = 0x02
    PULL_RESP = 0x03
    PULL_ACK = 0x04
    TX_ACK = 0x05


class RxPk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One received packet (PROTOCOL.TXT section 4, "rxpk" object); unknown keys ignored."""

    data: str  # base64 PHYPayload
    tmst: int = 0  # internal concentrator counter at end of reception, microseconds
    time: str | None = None  # UTC time of reception (ISO 8601), when the gateway knows it
    freq: float = 868.1  # MHz
    chan: int = 0
    rfch: int = 0
    stat: int = 1  # CRC status: 1 OK, -1 fail, 0 no CRC
    modu: str = "LORA"
    datr: str | int = "SF7BW125"
    codr: str = "4/5"
    # None when the forwarder sent none: an FSK packet has no "lsnr" (PROTOCOL.TXT section 4),
    # and a missing value is never read as 0 dBm / 0 dB.
    rssi: float | None = None  # dBm
    lsnr: float | None = None  # dB
    size: int = 0


class TxPk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A downlink to send ("txpk", PROTOCOL.TXT section 6)."""

    imme: bool = False
    tmst: int | None = None
    freq: float
    rfch: int = 0
    powe: int = 14
    modu: str = "LORA"
    datr: str | int
    codr: str = "4/5"
    ipol: bool = True
    size: int
    data: str


class _PushBody(msgspec.Struct):
    rxpk: list[RxPk] = msgspec.field(default_factory=list)
    stat: dict[str, Any] | None = None


class _PullRespBody(msgspec.Struct):
    txpk: TxPk


class Datagram(msgspec.Struct, frozen=True):
    ident: int
    token: int
    gateway_eui: int | None = None
    rxpk: list[RxPk] = []
    txpk: TxPk | None = None
    tx_error: str | None = None  # TX_ACK "txpk_ack.error"; None or "NONE" means sent


_HEAD = struct.Struct(">BHB")
_push_decoder = msgspec.json.Decoder(_PushBody)
_resp_decoder = msgspec.json.Decoder(_PullRespBody)
_encoder = msgspec.json.Encoder()


def parse_datagram(data: bytes) -> Datagram:
    if len(data) < 4:
        raise LoRaWANDecodeError("bad_udp", f"{len(data)} bytes, the header has 4")
    if len(data) > MAX_DATAGRAM:
        raise LoRaWANDecodeError("json_too_large", f"datagram of {len(data)} bytes, the limit is {MAX_DATAGRAM}")
    version, token, ident = _HEAD.unpack_from(data)
    if version not in (1, PROTOCOL_VERSION):
        raise LoRaWANDecodeError("bad_udp", f"protocol version {version}")
    if ident in (Ident.PUSH_DATA, Ident.PULL_DATA, Ident.TX_ACK):
        if len(data) < 12:
            raise LoRaWANDecodeError("bad_udp", f"{Ident(ident).name} without gateway EUI")
        eui = int.from_bytes(data[4:12], "big")
        body = data[12:]
        if ident == Ident.PUSH_DATA:
            check_json(body, max_bytes=MAX_DATAGRAM, what="PUSH_DATA")
            try:
                push = _push_decoder.decode(body)
            except (msgspec.DecodeError, UnicodeDecodeError) as error:  # msgspec raises the latter on bad UTF-8
                raise LoRaWANDecodeError("bad_udp", f"PUSH_DATA JSON: {error}") from None
            return Datagram(ident, token, eui, rxpk=push.rxpk)
        if ident == Ident.TX_ACK:
            error_text = None
            if body.strip(b"\x00 "):
                check_json(body, max_bytes=MAX_DATAGRAM, what="TX_ACK")
                try:
                    ack = msgspec.json.decode(body.rstrip(b"\x00"))
                    error_text = str(ack.get("txpk_ack", {}).get("error", "NONE"))
                except (msgspec.DecodeError, UnicodeDecodeError, AttributeError):
                    raise LoRaWANDecodeError("bad_udp", "TX_ACK JSON") from None
            return Datagram(ident, token, eui, tx_error=error_text)
        return Datagram(ident, token, eui)
    if ident == Ident.PULL_RESP:
        check_json(data[4:], max_bytes=MAX_DATAGRAM, what="PULL_RESP")
        try:
            resp = _resp_decoder.decode(data[4:])
        except (msgspec.DecodeError, UnicodeDecodeError) as error:  # msgspec raises the latter on bad UTF-8
            raise LoRaWANDecodeError("bad_udp", f"PULL_RESP JSON: {error}") from None
        return Datagram(ident, token, txpk=resp.txpk)
    if ident in (Ident.PUSH_ACK, Ident.PULL_ACK):
        return Datagram(ident, token)
    raise LoRaWANDecodeError("bad_udp", f"unknown identifier 0x{ident:02x}")


def _head(token: int, ident: Ident) -> bytes:
    return _HEAD.pack(PROTOCOL_VERSION, token & 0xFFFF, ident)


def build_push_data(token: int, gateway_eui: int, rxpk: list[RxPk], stat: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"rxpk": rxpk}
    if stat is not None:
        body["stat"] = stat
    return _head(token, Ident.PUSH_DATA) + gateway_eui.to_bytes(8, "big") + _encoder.encode(body)


def build_push_ack(token: int) -> bytes:
    return _head(token, Ident.PUSH_ACK)


def build_pull_data(token: int, gateway_eui: int) -> bytes:
    return _head(token, Ident.PULL_DATA) + gateway_eui.to_bytes(8, "big")


def build_pull_ack(token: int) -> bytes:
    return _head(token, Ident.PULL_ACK)


def build_pull_resp(token: int, txpk: TxPk) -> bytes:
    return _head(token, Ident.PULL_RESP) + _encoder.encode({"txpk": txpk})


def build_tx_ack(token: int, gateway_eui: int, error: str = "NONE") -> bytes:
    body = _encoder.encode({"txpk_ack": {"error": error}})
    return _head(token, Ident.TX_ACK) + gateway_eui.to_bytes(8, "big") + body
