"""LoRaWAN 1.0.x PHY frames: parse and build data frames and join messages, MIC and encryption.

References are to the LoRaWAN 1.0.2/1.0.3 specification (LoRa Alliance). Every multi-octet
field is little endian on the air (section 1.2). Pure functions: bytes and keys in, bytes or
structures out, `LoRaWANDecodeError` on malformed input. AES and AES-CMAC come from
`cryptography`.
"""

from __future__ import annotations

import enum
import struct
import threading
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from drivers.lorawan.errors import LoRaWANDecodeError

__all__ = [
    "DataFrame",
    "JoinAccept",
    "JoinRequest",
    "MAX_PHY_PAYLOAD",
    "MType",
    "aes_ecb_encrypt",
    "build_data_frame",
    "build_join_accept",
    "build_join_request",
    "cmac4",
    "crypt_frm_payload",
    "data_mic",
    "decrypt_join_accept",
    "derive_session_keys",
    "join_request_mic",
    "mtype_of",
    "parse_data_frame",
    "parse_join_request",
]

UPLINK: Final = 0
DOWNLINK: Final = 1
# The largest PHYPayload: MHDR (1) + MACPayload (at most M = 250 octets, the largest of any data
# rate in the LoRaWAN Regional Parameters' maximum payload tables) + MIC (4). Longer frames are
# not LoRaWAN; the MIC block B0 also carries the message length in one octet (section 4.4).
MAX_PHY_PAYLOAD: Final = 255


class MType(enum.IntEnum):
    """MHDR.MType (section 4.2.1, table 1)."""

    JOIN_REQUEST = 0
    JOIN_ACCEPT = 1
    UNCONFIRMED_UP = 2
    UNCONFIRMED_DOWN = 3
    CONFIRMED_UP = 4
    CONFIRMED_DOWN = 5
    RFU = 6
    PROPRIETARY = 7


class DataFrame(msgspec.Struct, frozen=True, gc=False):
    """A data message as heard (section 4.3): FRMPayload still encrypted."""

    mhdr: int
    dev_addr: int
    fctrl: int
    fcnt16: int
    fopts: bytes
    fport: int | None
    frm_payload: bytes
    mic: bytes
    raw: bytes  # the whole PHYPayload

    @property
    def mtype(self) -> int:
        return self.mhdr >> 5


class JoinRequest(msgspec.Struct, frozen=True, gc=False):
    """Section 6.2.4: AppEUI (JoinEUI), DevEUI, DevNonce; EUIs as big-endian integers."""

    join_eui: int
    dev_eui: int
    dev_nonce: int
    mic: bytes
    raw: bytes


class JoinAccept(msgspec.Struct, frozen=True):
    """Section 6.2.5, decrypted."""

    app_nonce: int
    net_id: int
    dev_addr: int
    dl_settings: int
    rx_delay: int
    cf_list: bytes


class _KeyCache(threading.local):
    """Per-thread AES-ECB encryptors and keyed CMAC contexts by key. ECB holds no state between
    blocks, so one encryptor serves every frame of a device; a CMAC context is copied per
    message (measured at about a quarter of the cost of keying a new one). No cipher set-up per
    frame (the hot path, see benchmarks/lorawan.py). Per thread, because contexts are not
    thread-safe."""

    def __init__(self) -> None:
        self.encryptors: dict[bytes, Any] = {}
        self.cmacs: dict[bytes, CMAC] = {}


_cache = _KeyCache()
_CACHE_LIMIT: Final = 8192  # keys in use at once; more only on a huge fleet (cleared, rebuilt)


def _encryptor(key: bytes) -> Any:
    encryptor = _cache.encryptors.get(key)
    if encryptor is None:
        if len(_cache.encryptors) >= _CACHE_LIMIT:
            _cache.encryptors.clear()
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - the spec's block operation
        _cache.encryptors[key] = encryptor
    return encryptor


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-128 in ECB over whole blocks (len(data) a multiple of 16)."""
    return bytes(_encryptor(key).update(data))


def _aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305 - the spec's block operation
    return decryptor.update(data) + decryptor.finalize()


def cmac4(key: bytes, message: bytes) -> bytes:
    """The first four octets of AES-CMAC (RFC 4493), the MIC of every LoRaWAN 1.0 message."""
    keyed = _cache.cmacs.get(key)
    if keyed is None:
        if len(_cache.cmacs) >= _CACHE_LIMIT:
            _cache.cmacs.clear()
        keyed = _cache.cmacs[key] = CMAC(algorithms.AES(key))
    mac = keyed.copy()
    mac.update(message)
    return mac.finalize()[:4]


def mtype_of(phy: bytes) -> int:
    if not phy:
        raise LoRaWANDecodeError("truncated", "empty PHYPayload")
    mhdr = phy[0]
    if mhdr & 0x03 != 0:  # Major (section 4.2.2): only LoRaWAN R1 = 0 is defined
        raise LoRaWANDecodeError("bad_mhdr", f"major version {mhdr & 0x03}")
    return mhdr >> 5


# --- data messages ---------------------------------------------------------------------------

_FHDR = struct.Struct("<IBH")  # DevAddr, FCtrl, FCnt (section 4.3.1)


def parse_data_frame(phy: bytes) -> DataFrame:
    """Split a data up/down message (sections 4.2-4.3); no key needed yet."""
    mtype = mtype_of(phy)
    if mtype not in (2, 3, 4, 5):
        raise LoRaWANDecodeError("bad_mhdr", f"not a data message (MType {mtype})")
    # MHDR(1) + FHDR(7..22) + MIC(4)
    if len(phy) < 12:
        raise LoRaWANDecodeError("truncated", f"{len(phy)} bytes, a data frame has at least 12")
    if len(phy) > MAX_PHY_PAYLOAD:
        raise LoRaWANDecodeError("too_long", f"{len(phy)} bytes, a PHYPayload has at most {MAX_PHY_PAYLOAD}")
    dev_addr, fctrl, fcnt16 = _FHDR.unpack_from(phy, 1)
    fopts_len = fctrl & 0x0F
    end = len(phy) - 4
    pos = 8 + fopts_len
    if pos > end:
        raise LoRaWANDecodeError("truncated", f"FOptsLen {fopts_len} runs past the MIC")
    fopts = phy[8:pos]
    fport: int | None = None
    frm_payload = b""
    if pos < end:
        fport = phy[pos]
        frm_payload = phy[pos + 1 : end]
        if fport == 0 and fopts_len:
            # Section 4.3.1.6: MAC commands may not be in FOpts and FRMPayload at once.
            raise LoRaWANDecodeError("bad_fopts", "FOpts present with FPort 0")
    return DataFrame(phy[0], dev_addr, fctrl, fcnt16, fopts, fport, frm_payload, phy[end:], phy)


def _b0(direction: int, dev_addr: int, fcnt32: int, length: int) -> bytes:
    """Block B0 of the MIC computation (section 4.4); its length field is one octet."""
    if length > MAX_PHY_PAYLOAD - 4:
        raise LoRaWANDecodeError("too_long", f"{length}-byte message, a PHYPayload has at most {MAX_PHY_PAYLOAD}")
    return struct.pack("<B4xBIIBB", 0x49, direction, dev_addr, fcnt32 & 0xFFFFFFFF, 0, length)


def data_mic(nwk_skey: bytes, msg: bytes, direction: int, dev_addr: int, fcnt32: int) -> bytes:
    """MIC = aes128_cmac(NwkSKey, B0 | msg)[0..3], msg = MHDR | FHDR | FPort | FRMPayload."""
    return cmac4(nwk_skey, _b0(direction, dev_addr, fcnt32, len(msg)) + msg)


_A_PREFIX = struct.Struct("<B4xBIIB")


def crypt_frm_payload(key: bytes, payload: bytes, direction: int, dev_addr: int, fcnt32: int) -> bytes:
    """Encrypt or decrypt FRMPayload (section 4.3.3.1): XOR with AES(key, A_i), i = 1..k.

    The key is AppSKey for FPort 1..255 and NwkSKey for FPort 0.
    """
    if not payload:
        return b""
    blocks = (len(payload) + 15) // 16
    prefix = _A_PREFIX.pack(0x01, direction, dev_addr, fcnt32 & 0xFFFFFFFF, 0)
    stream = aes_ecb_encrypt(key, b"".join(prefix + bytes((i,)) for i in range(1, blocks + 1)))
    n = len(payload)
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream[:n], "big")).to_bytes(n, "big")


def build_data_frame(
    *,
    nwk_skey: bytes,
    app_skey: bytes,
    dev_addr: int,
    fcnt32: int,
    fport: int,
    payload: bytes,
    confirmed: bool = False,
    direction: int = UPLINK,
    fctrl: int = 0,
    fopts: bytes = b"",
) -> bytes:
    """A complete PHYPayload with encrypted FRMPayload and MIC (the simulator's side)."""
    if direction == UPLINK:
        mtype = MType.CONFIRMED_UP if confirmed else MType.UNCONFIRMED_UP
    else:
        mtype = MType.CONFIRMED_DOWN if confirmed else MType.UNCONFIRMED_DOWN
    if 13 + len(fopts) + len(payload) > MAX_PHY_PAYLOAD:
        raise ValueError(f"{len(payload)}-byte payload makes a frame over {MAX_PHY_PAYLOAD} bytes")
    key = nwk_skey if fport == 0 else app_skey
    enc = crypt_frm_payload(key, payload, direction, dev_addr, fcnt32)
    msg = (
        bytes((mtype << 5,))
        + _FHDR.pack(dev_addr, (fctrl & 0xF0) | len(fopts), fcnt32 & 0xFFFF)
        + fopts
        + bytes((fport,))
        + enc
    )
    return msg + data_mic(nwk_skey, msg, direction, dev_addr, fcnt32)


# --- join procedure (section 6.2) ------------------------------------------------------------

_JOIN_REQUEST = struct.Struct("<QQH")


def parse_join_request(phy: bytes) -> JoinRequest:
    if mtype_of(phy) != MType.JOIN_REQUEST:
        raise LoRaWANDecodeError("bad_mhdr", "not a join request")
    if len(phy) != 23:
        raise LoRaWANDecodeError("truncated", f"join request of {len(phy)} bytes, expected 23")
    join_eui, dev_eui, dev_nonce = _JOIN_REQUEST.unpack_from(phy, 1)
    return JoinRequest(join_eui, dev_eui, dev_nonce, phy[19:], phy)


def join_request_mic(app_key: bytes, phy_without_mic: bytes) -> bytes:
    """Section 6.2.4: cmac = aes128_cmac(AppKey, MHDR | AppEUI | DevEUI | DevNonce)."""
    return cmac4(app_key, phy_without_mic)


def build_join_request(app_key: bytes, join_eui: int, dev_eui: int, dev_nonce: int) -> bytes:
    msg = bytes((MType.JOIN_REQUEST << 5,)) + _JOIN_REQUEST.pack(join_eui, dev_eui, dev_nonce)
    return msg + join_request_mic(app_key, msg)


def build_join_accept(
    app_key: bytes,
    *,
    app_nonce: int,
    net_id: int,
    dev_addr: int,
    dl_settings: int = 0,
    rx_delay: int = 1,
    cf_list: bytes = b"",
) -> bytes:
    """Section 6.2.5: MIC over the plaintext, then the network side *decrypts* with AppKey
    (AES-ECB) so the device only needs AES encryption to recover the message."""
    body = (
        app_nonce.to_bytes(3, "little")
        + net_id.to_bytes(3, "little")
        + dev_addr.to_bytes(4, "little")
        + bytes((dl_settings, rx_delay))
        + cf_list
    )
    mhdr = bytes((MType.JOIN_ACCEPT << 5,))
    mic = cmac4(app_key, mhdr + body)
    return mhdr + _aes_ecb_decrypt(app_key, body + mic)


def decrypt_join_accept(app_key: bytes, phy: bytes) -> JoinAccept:
    """The device's side of section 6.2.5 (used by the simulator and the tests)."""
    if mtype_of(phy) != MType.JOIN_ACCEPT:
        raise LoRaWANDecodeError("bad_mhdr", "not a join accept")
    if len(phy) not in (17, 33):
        raise LoRaWANDecodeError("truncated", f"join accept of {len(phy)} bytes")
    plain = aes_ecb_encrypt(app_key, phy[1:])
    body, mic = plain[:-4], plain[-4:]
    if cmac4(app_key, phy[:1] + body) != mic:
        raise LoRaWANDecodeError("bad_mic", "join accept MIC")
    return JoinAccept(
        app_nonce=int.from_bytes(body[0:3], "little"),
        net_id=int.from_bytes(body[3:6], "little"),
        dev_addr=int.from_bytes(body[6:10], "little"),
        dl_settings=body[10],
        rx_delay=body[11],
        cf_list=bytes(body[12:]),
    )


def derive_session_keys(app_key: bytes, app_nonce: int, net_id: int, dev_nonce: int) -> tuple[bytes, bytes]:
    """Section 6.2.5: NwkSKey = aes128_encrypt(AppKey, 0x01 | AppNonce | NetID | DevNonce | pad16),
    AppSKey likewise with 0x02. Returns (NwkSKey, AppSKey)."""
    tail = app_nonce.to_bytes(3, "little") + net_id.to_bytes(3, "little") + dev_nonce.to_bytes(2, "little")
    pad = bytes(7)
    keys = aes_ecb_encrypt(app_key, b"\x01" + tail + pad + b"\x02" + tail + pad)
    return keys[:16], keys[16:]
