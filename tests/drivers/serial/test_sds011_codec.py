"""SDS011 frames against the Nova Fitness protocol document; resynchronisation; hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial import sds011
from drivers.serial.errors import SerialDecodeError
from tests.drivers.serial.vectors import SDS011_COMMANDS, SDS011_FRAMES, SDS011_SOURCE


@pytest.mark.parametrize(("what", "frame", "builder", "args"), SDS011_COMMANDS)
def test_published_commands(what: str, frame: bytes, builder: str, args: tuple) -> None:
    assert getattr(sds011, builder)(*args) == frame, f"{SDS011_SOURCE}: {what}"


@pytest.mark.parametrize(("what", "frame", "expected"), SDS011_FRAMES)
def test_published_sensor_frames(what: str, frame: bytes, expected: tuple) -> None:
    decoded = sds011.decode_frame(frame)
    if expected[0] == "data":
        assert isinstance(decoded, sds011.DataFrame), what
        assert (decoded.device_id, decoded.pm2_5, decoded.pm10) == expected[1:]
        readings = sds011.readings(decoded, "serial:ttyUSB0/a160", 5.0)
        assert [(r.metric, r.value) for r in readings] == [("pm2_5", 123.6), ("pm10", 261.8)]
    else:
        assert isinstance(decoded, sds011.ReplyFrame), what
        assert (decoded.device_id, decoded.command, decoded.data) == expected[1:]


def test_bad_checksum_is_an_error() -> None:
    frame = bytearray(SDS011_FRAMES[0][1])
    frame[3] ^= 0x10
    with pytest.raises(SerialDecodeError) as info:
        sds011.decode_frame(bytes(frame))
    assert info.value.cause == "checksum_mismatch"


def test_splitter_resynchronises_after_garbage_and_split_reads() -> None:
    good = SDS011_FRAMES[0][1]
    stream = b"\x13\xaa\x00\xab" + good[:4]
    splitter = sds011.FrameSplitter()
    first = splitter.feed(stream)
    assert [type(x) for x in first] == [SerialDecodeError]  # the leading noise, reported once
    assert first[0].cause == "garbage"
    rest = splitter.feed(good[4:] + good)
    assert [x for x in rest if isinstance(x, sds011.DataFrame)] == [
        sds011.DataFrame(0xA160, 123.6, 261.8)
    ] * 2


def test_splitter_drops_a_corrupted_frame_whole() -> None:
    good = SDS011_FRAMES[0][1]
    bad = bytearray(good)
    bad[2] ^= 0x01
    out = sds011.FrameSplitter().feed(bytes(bad) + good)
    assert [getattr(x, "cause", "frame") for x in out] == ["checksum_mismatch", "frame"]


def test_data_frame_builder_roundtrip() -> None:
    frame = sds011.build_data_frame(0x1234, 7.3, 999.9)
    assert sds011.decode_frame(frame) == sds011.DataFrame(0x1234, 7.3, 999.9)


@given(st.lists(st.binary(max_size=40), max_size=12))
def test_splitter_arbitrary_bytes_only_own_errors(chunks: list[bytes]) -> None:
    splitter = sds011.FrameSplitter()
    for chunk in chunks:
        for item in splitter.feed(chunk):
            assert isinstance(item, sds011.DataFrame | sds011.ReplyFrame | SerialDecodeError)


@given(st.binary(max_size=20))
def test_decode_frame_arbitrary_bytes(data: bytes) -> None:
    try:
        sds011.decode_frame(data)
    except SerialDecodeError:
        pass


@given(st.binary(max_size=30), st.integers(0, 0xFFFF), st.integers(0, 6553), st.integers(0, 6553))
def test_frame_found_behind_any_noise(noise: bytes, device_id: int, pm25: int, pm10: int) -> None:
    frame = sds011.build_data_frame(device_id, pm25 / 10, pm10 / 10)
    out = sds011.FrameSplitter().feed(noise + frame)
    assert sds011.DataFrame(device_id, pm25 / 10, pm10 / 10) in out
