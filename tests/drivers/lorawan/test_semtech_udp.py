"""Semtech packet-forwarder protocol v2, with the JSON examples of its PROTOCOL.TXT
(Lora-net/packet_forwarder, PROTOCOL.TXT sections 4 "Upstream protocol" and 6 "Downstream")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan import semtech_udp as su
from drivers.lorawan.errors import LoRaWANDecodeError

# PROTOCOL.TXT section 4, example of a PUSH_DATA JSON body (one packet of the two shown).
PUSH_JSON = (
    b'{"rxpk":[{"time":"2013-03-31T16:21:17.528002Z","tmst":3512348611,"chan":2,"rfch":0,'
    b'"freq":866.349812,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/6","rssi":-35,'
    b'"lsnr":5.1,"size":32,"data":"-DS4CGaDCdG+48eJNM3Vai-zDpsR71Pn9CPA9uCON84"}]}'
)
# PROTOCOL.TXT section 6, example of a PULL_RESP JSON body.
TXPK_JSON = (
    b'{"txpk":{"imme":true,"freq":864.123456,"rfch":0,"powe":14,"modu":"LORA","datr":"SF11BW125",'
    b'"codr":"4/6","ipol":false,"size":32,"data":"H3P3N2i9qc4yt7rK7ldqoeCVJGBybzPY5h1Dd7P7p8v"}}'
)


def test_push_data_example() -> None:
    datagram = su.parse_datagram(b"\x02\x12\x34\x00" + bytes.fromhex("aa555a0000000001") + PUSH_JSON)
    assert (datagram.ident, datagram.token, datagram.gateway_eui) == (su.Ident.PUSH_DATA, 0x1234, 0xAA555A0000000001)
    (rx,) = datagram.rxpk
    assert (rx.tmst, rx.freq, rx.rssi, rx.lsnr, rx.datr, rx.stat) == (3512348611, 866.349812, -35, 5.1, "SF7BW125", 1)


def test_pull_resp_example_and_acks() -> None:
    resp = su.parse_datagram(b"\x02\x00\x07\x03" + TXPK_JSON)
    assert resp.txpk is not None and resp.txpk.imme and resp.txpk.datr == "SF11BW125"
    assert su.build_push_ack(0xBEEF) == b"\x02\xbe\xef\x01"
    assert su.build_pull_ack(0x0102) == b"\x02\x01\x02\x04"
    pull = su.parse_datagram(su.build_pull_data(5, 0xAA555A0000000002))
    assert (pull.ident, pull.gateway_eui) == (su.Ident.PULL_DATA, 0xAA555A0000000002)
    ack = su.parse_datagram(su.build_tx_ack(9, 1, "TOO_LATE"))
    assert (ack.ident, ack.tx_error) == (su.Ident.TX_ACK, "TOO_LATE")
    assert su.parse_datagram(b"\x02\x00\x09\x05" + bytes(8)).tx_error is None  # TX_ACK without JSON


def test_round_trip() -> None:
    rx = su.RxPk(data="QAEC", tmst=7, rssi=-80, lsnr=-2.5)
    parsed = su.parse_datagram(su.build_push_data(3, 42, [rx]))
    assert parsed.rxpk == [rx]


@pytest.mark.parametrize("data", [b"", b"\x02\x00", b"\x07\x00\x00\x00", b"\x02\x00\x00\x00abc",
                                  b"\x02\x00\x00\x00" + bytes(8) + b"{not json", b"\x02\x00\x00\x09",
                                  # invalid UTF-8 inside a JSON string (found by the socket fuzz test)
                                  b"\x02\x00\x00\x00" + bytes(8) + b'{"rxpk":[{"data":"\xb1"}]}',
                                  b"\x02\x00\x00\x05" + bytes(8) + b'{"txpk_ack":{"error":"\xff"}}',
                                  b"\x02\x00\x00\x03" + b'{"txpk":{"data":"\xfe"}}'])
def test_malformed(data: bytes) -> None:
    with pytest.raises(LoRaWANDecodeError) as info:
        su.parse_datagram(data)
    assert info.value.cause == "bad_udp"


@given(st.binary(max_size=80))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        su.parse_datagram(data)
    except LoRaWANDecodeError:
        pass


@given(st.binary(max_size=40))
def test_arbitrary_json_body(body: bytes) -> None:
    try:
        su.parse_datagram(b"\x02\x00\x00\x00" + bytes(8) + body)
    except LoRaWANDecodeError:
        pass


DEEP = b"[" * 5000 + b"]" * 5000  # issue 17: fits in 10 KB, gave RecursionError
EUI8 = bytes(8)


@pytest.mark.parametrize(("data", "cause"), [
    (b"\x02\x00\x00\x00" + EUI8 + b'{"rxpk":[],"stat":{"a":' + DEEP + b"}}", "json_too_deep"),
    (b"\x02\x00\x00\x00" + EUI8 + b'{"rxpk":[{"data":"QAEC","extra":' + DEEP + b"}]}", "json_too_deep"),
    (b"\x02\x00\x00\x00" + EUI8 + b'{"other":' + DEEP + b"}", "json_too_deep"),
    (b"\x02\x00\x00\x03" + b'{"txpk":' + DEEP + b"}", "json_too_deep"),
    (b"\x02\x00\x00\x05" + EUI8 + b'{"txpk_ack":' + DEEP + b"}", "json_too_deep"),
    (b"\x02\x00\x00\x00" + EUI8 + b'{"rxpk":[{"data":"' + b"A" * su.MAX_DATAGRAM + b'"}]}', "json_too_large"),
])
def test_nesting_and_size_are_capped(data: bytes, cause: str) -> None:
    with pytest.raises(LoRaWANDecodeError) as info:
        su.parse_datagram(data)
    assert info.value.cause == cause
