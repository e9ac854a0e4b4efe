"""LoRaWAN 1.0.x frame crypto against published vectors.

Source of every vector: the lora-packet library's README and test suite
(github.com/anthonykirby/lora-packet, README.md "Example" and test/test_mic.js,
test/test_decrypt.js, test/test_keygen.js), a decoder used with The Things Network. Keys and
frames are as published; DevAddr/EUI fields are given there big-endian and sent reversed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan import phy
from drivers.lorawan.errors import LoRaWANDecodeError

NWK_SKEY = bytes.fromhex("44024241ed4ce9a68c6a8bc055233fd3")  # lora-packet README
APP_SKEY = bytes.fromhex("ec925802ae430ca77fd3dd73cb2cc588")  # lora-packet README
APP_KEY = bytes.fromhex("98929b92c49edba9676d646d3b612456")  # lora-packet test_mic.js / test_keygen.js

# (PHYPayload hex, expected MIC hex, expected cleartext or None) - lora-packet test_mic.js,
# test_decrypt.js and the README example.
DATA_VECTORS = [
    ("40F17DBE4900020001954378762B11FF0D", "2b11ff0d", b"test"),
    ("40F17DBE49000300012A3518AF", "2a3518af", None),
    ("60f17dbe4920020001f9d65d27", "f9d65d27", None),  # downlink with ACK, no FRMPayload
    (
        "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376affb8aa17ad3"
        "0075293f28dea8a20af3c5e7",
        None,
        b"The quick brown fox jumps over the lazy dog.",
    ),
]


@pytest.mark.parametrize(("frame_hex", "mic_hex", "clear"), DATA_VECTORS)
def test_data_frame_vectors(frame_hex: str, mic_hex: str | None, clear: bytes | None) -> None:
    raw = bytes.fromhex(frame_hex)
    frame = phy.parse_data_frame(raw)
    assert frame.dev_addr == 0x49BE7DF1  # README: DevAddr 49be7df1, sent as f1 7d be 49
    direction = phy.DOWNLINK if frame.mtype in (3, 5) else phy.UPLINK
    mic = phy.data_mic(NWK_SKEY, raw[:-4], direction, frame.dev_addr, frame.fcnt16)
    assert mic == frame.mic
    if mic_hex is not None:
        assert mic.hex() == mic_hex
    if clear is not None:
        assert phy.crypt_frm_payload(APP_SKEY, frame.frm_payload, direction, frame.dev_addr, frame.fcnt16) == clear


def test_bad_mic_vector_is_detected() -> None:
    raw = bytes.fromhex("40F17DBE49000300012A3518AA")  # test_mic.js: MIC altered (aa, not af)
    frame = phy.parse_data_frame(raw)
    assert phy.data_mic(NWK_SKEY, raw[:-4], phy.UPLINK, frame.dev_addr, frame.fcnt16) != frame.mic


def test_build_reproduces_the_published_frame() -> None:
    built = phy.build_data_frame(
        nwk_skey=NWK_SKEY, app_skey=APP_SKEY, dev_addr=0x49BE7DF1, fcnt32=2, fport=1, payload=b"test"
    )
    assert built.hex() == "40f17dbe4900020001954378762b11ff0d"


def test_join_request_mic_vector() -> None:
    raw = bytes.fromhex("0039363463336913AA05693574323831330489C65B1304")  # test_mic.js
    request = phy.parse_join_request(raw)
    assert phy.join_request_mic(APP_KEY, raw[:-4]).hex() == "c65b1304"
    assert request.mic.hex() == "c65b1304"
    bad = bytes.fromhex("0039363463336913AA05693574323831330489C65B1305")  # altered MIC
    assert phy.join_request_mic(APP_KEY, bad[:-4]) != bad[-4:]


def test_join_accept_mic_vector() -> None:
    # test_mic.js: unencrypted JoinAccept; AppNonce 376338, NetID aabbcc, DevAddr 012ccde7.
    plain = bytes.fromhex("20386337CCBBAAE7CD2C010000D9D0A6E7")
    assert phy.cmac4(APP_KEY, plain[:-4]).hex() == "d9d0a6e7"
    built = phy.build_join_accept(APP_KEY, app_nonce=0x376338, net_id=0xAABBCC, dev_addr=0x012CCDE7, rx_delay=0)
    accept = phy.decrypt_join_accept(APP_KEY, built)
    assert (accept.app_nonce, accept.net_id, accept.dev_addr, accept.rx_delay) == (0x376338, 0xAABBCC, 0x012CCDE7, 0)


def test_session_key_derivation_vector() -> None:
    # test_keygen.js: AppNonce 376338, NetID aabbcc, DevNonce f18e (big-endian as published).
    nwk, app = phy.derive_session_keys(APP_KEY, 0x376338, 0xAABBCC, 0xF18E)
    assert nwk.hex() == "4e3d6e6afbcc67af2ba3c8e8ec4acf4b"
    assert app.hex() == "610897aa6f1460623443b527d3ac6a9d"


def test_fcnt_above_16_bits_enters_mic_and_keystream() -> None:
    a = phy.build_data_frame(nwk_skey=NWK_SKEY, app_skey=APP_SKEY, dev_addr=1, fcnt32=0x10002, fport=1, payload=b"x")
    b = phy.build_data_frame(nwk_skey=NWK_SKEY, app_skey=APP_SKEY, dev_addr=1, fcnt32=0x00002, fport=1, payload=b"x")
    assert a[:8] == b[:8] and a != b


@pytest.mark.parametrize(
    ("raw", "cause"),
    [(b"", "truncated"), (b"\x40\x01\x02", "truncated"), (b"\x41" + bytes(12), "bad_mhdr"),
     (bytes.fromhex("400102030405ff00") + bytes(4), "truncated")],
)
def test_malformed_frames(raw: bytes, cause: str) -> None:
    with pytest.raises(LoRaWANDecodeError) as info:
        phy.parse_data_frame(raw)
    assert info.value.cause == cause


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    for parse in (phy.parse_data_frame, phy.parse_join_request, lambda r: phy.decrypt_join_accept(APP_KEY, r)):
        try:
            parse(raw)
        except LoRaWANDecodeError:
            pass


# RFC 4493 section 4 test vectors (AES-CMAC), key 2b7e1516...; cmac4 keeps the first 4 octets.
RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_M = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(("length", "mac"), [
    (0, "bb1d6929e95937287fa37d129b756746"), (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"), (64, "51f0bebf7e3b9d92fc49741779363cfe"),
])
def test_cmac_rfc4493_vectors(length: int, mac: str) -> None:
    assert phy.cmac4(RFC4493_KEY, RFC4493_M[:length]).hex() == mac[:8]


def test_longest_frame_is_accepted_and_one_more_byte_is_a_decode_error() -> None:
    # 255 = MHDR + MACPayload of M = 250 (the largest of the regional maximum payload tables) + MIC
    longest = phy.build_data_frame(nwk_skey=NWK_SKEY, app_skey=APP_SKEY, dev_addr=1, fcnt32=1, fport=1,
                                   payload=bytes(phy.MAX_PHY_PAYLOAD - 13))
    assert len(longest) == phy.MAX_PHY_PAYLOAD
    frame = phy.parse_data_frame(longest)
    assert phy.data_mic(NWK_SKEY, longest[:-4], phy.UPLINK, 1, 1) == frame.mic
    with pytest.raises(ValueError, match="over 255"):
        phy.build_data_frame(nwk_skey=NWK_SKEY, app_skey=APP_SKEY, dev_addr=1, fcnt32=1, fport=1,
                             payload=bytes(phy.MAX_PHY_PAYLOAD - 12))
    with pytest.raises(LoRaWANDecodeError) as info:
        phy.parse_data_frame(longest[:-4] + b"\0" + longest[-4:])
    assert info.value.cause == "too_long"
    with pytest.raises(LoRaWANDecodeError) as info:
        phy.data_mic(NWK_SKEY, bytes(phy.MAX_PHY_PAYLOAD), phy.UPLINK, 1, 1)  # the MIC block's one-octet length
    assert info.value.cause == "too_long"


@given(st.integers(min_value=0, max_value=600).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_frames_of_any_length_raise_only_decode_error(body: bytes) -> None:
    # An uplink MHDR and a DevAddr with a session, so frames of every length reach the MIC
    # (issue 17: struct.error on frames over 255 bytes).
    from pathlib import Path

    from drivers.lorawan import concentrator
    from drivers.lorawan.sessions import Session, SessionStore

    raw = b"\x40\xf1\x7d\xbe\x49" + body
    store = SessionStore(Path("/nonexistent/never-written.json"))
    store.put(Session(dev_eui="01", dev_addr=0x49BE7DF1, nwk_skey=NWK_SKEY.hex(), app_skey=APP_SKEY.hex(),
                      activation="abp"))
    for candidate in (raw[: len(body)], raw):  # lengths 0..600 and 5..605
        try:
            concentrator.open_data_frame(candidate, store)
        except LoRaWANDecodeError as error:
            if len(candidate) > phy.MAX_PHY_PAYLOAD:
                assert error.cause == "too_long"


def test_every_length_up_to_600_is_a_frame_or_a_decode_error() -> None:
    from pathlib import Path

    from drivers.lorawan import concentrator
    from drivers.lorawan.sessions import Session, SessionStore

    store = SessionStore(Path("/nonexistent/never-written.json"))
    store.put(Session(dev_eui="01", dev_addr=0x49BE7DF1, nwk_skey=NWK_SKEY.hex(), app_skey=APP_SKEY.hex(),
                      activation="abp"))
    causes: dict[str, int] = {}
    for n in range(601):
        with pytest.raises(LoRaWANDecodeError) as info:
            concentrator.open_data_frame((b"\x40\xf1\x7d\xbe\x49\x00\x01\x00" + bytes(600))[:n], store)
        causes[info.value.cause] = causes.get(info.value.cause, 0) + 1
    # 0..11 bytes: shorter than MHDR + FHDR + MIC; 12..255: a frame with a wrong MIC; 256..600: too long
    assert causes == {"truncated": 12, "bad_mic": 244, "too_long": 345}
