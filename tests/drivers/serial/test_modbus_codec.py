"""Modbus RTU codec: CRC against published values, frames, register decoding, read planning."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.config import Register, load_map
from drivers.serial.errors import ModbusExceptionResponse, SerialDecodeError
from drivers.serial.modbus_codec import (
    build_read_request,
    build_read_response,
    classify_garbled,
    crc16,
    decode_block,
    decode_registers,
    parse_read_response,
    plan_reads,
    with_crc,
)
from tests.drivers.serial.vectors import MODBUS_CRC


@pytest.mark.parametrize(("frame", "expected", "source"), MODBUS_CRC)
def test_crc_published_values(frame: bytes, expected: int, source: str) -> None:
    assert crc16(frame) == expected, source


def test_crc_goes_low_byte_first() -> None:
    # Serial line spec 6.2.2: "the CRC ... low-order byte first": 02 07 -> 02 07 41 12.
    assert with_crc(bytes.fromhex("0207")) == bytes.fromhex("02074112")


def test_read_request_frame() -> None:
    frame = build_read_request(1, 4, 1, 2)
    assert frame[:6] == bytes.fromhex("010400010002")
    assert crc16(frame) == 0  # a frame with its CRC appended checks to zero


def test_read_response_roundtrip_and_errors() -> None:
    frame = build_read_response(7, 3, [0x00DF, 0x0199])
    assert parse_read_response(frame, 7, 3, 2) == [0x00DF, 0x0199]
    bad = bytearray(frame)
    bad[4] ^= 0x01
    with pytest.raises(SerialDecodeError) as info:
        parse_read_response(bytes(bad), 7, 3, 2)
    assert info.value.cause == "crc_mismatch"
    with pytest.raises(SerialDecodeError, match="wrong_unit"):
        parse_read_response(frame, 8, 3, 2)
    # Application protocol section 7: exception response = function | 0x80, exception code.
    exception = with_crc(bytes((7, 0x83, 0x02)))
    with pytest.raises(ModbusExceptionResponse) as raised:
        parse_read_response(exception, 7, 3, 2)
    assert raised.value.cause == "modbus_exception_illegal_data_address"
    assert raised.value.to_pdu() == bytes((0x83, 0x02))


def test_classify_garbled() -> None:
    assert classify_garbled(b"") == "no_response"
    frame = bytearray(build_read_response(1, 4, [1, 2]))
    frame[-1] ^= 0xFF
    assert classify_garbled(bytes(frame)) == "crc_mismatch"
    assert classify_garbled(b"\x00\xff\x13") == "garbage"


# Register decoding: (registers, type, word order, byte order, expected)
DECODING = [
    ([0x00DF], ">h", False, False, 223.0),
    ([0xFF9C], ">h", False, False, -100.0),  # int16 two's complement
    ([0xFF9C], ">H", False, False, 65436.0),
    ([0x0001, 0x86A0], ">i", False, False, 100000.0),
    ([0x86A0, 0x0001], ">i", True, False, 100000.0),  # little word order (low word first)
    ([0xFFFF, 0xFFFE], ">i", False, False, -2.0),
    ([0x4148, 0x0000], ">f", False, False, 12.5),  # IEEE 754: 12.5 = 0x41480000
    ([0x0000, 0x4148], ">f", True, False, 12.5),
    ([0x4841, 0x0000], ">f", False, True, 12.5),  # bytes swapped inside each register
    ([0x0000, 0x4841], ">f", True, True, 12.5),
    ([0x0001, 0x0000], ">I", True, False, 1.0),
]


@pytest.mark.parametrize(("registers", "fmt", "swap_words", "swap_bytes", "expected"), DECODING)
def test_decode_registers(
    registers: list[int], fmt: str, swap_words: bool, swap_bytes: bool, expected: float
) -> None:
    assert decode_registers(registers, fmt, swap_words=swap_words, swap_bytes=swap_bytes) == expected


def test_plan_reads_groups_contiguous_registers_per_function() -> None:
    registers = [
        Register(metric="temperature", function=4, address=1, type="int16", scale=0.1),
        Register(metric="humidity", function=4, address=2, type="uint16", scale=0.1),
        Register(metric="pressure", function=3, address=100, type="float32"),
        Register(metric="co2", function=3, address=300, type="uint16"),
    ]
    blocks = plan_reads(registers)
    assert [(b.function, b.address, b.count) for b in blocks] == [
        (3, 100, 2),
        (3, 300, 1),
        (4, 1, 2),
    ]


def test_plan_reads_respects_125_register_limit() -> None:
    registers = [
        Register(metric=f"m{i}", function=3, address=i * 4, type="uint32") for i in range(40)
    ]
    blocks = plan_reads(registers)
    assert all(b.count <= 125 for b in blocks)
    assert sum(len(b.fields) for b in blocks) == 40


def test_decode_block_xy_md02_map() -> None:
    (block,) = plan_reads(load_map("xy_md02"))
    readings, problems = decode_block(block, [0xFF38, 0x0199], "serial:ttyUSB0/1", 10.0)
    assert problems == []
    values = {r.metric: r.value for r in readings}
    assert values == pytest.approx({"temperature": -20.0, "humidity": 40.9})
    assert {r.device for r in readings} == {"serial:ttyUSB0/1"}


def test_decode_block_reports_nan_but_keeps_the_other_fields() -> None:
    registers = [
        Register(metric="temperature", address=0, type="float32"),
        Register(metric="humidity", address=2, type="uint16"),
    ]
    (block,) = plan_reads(registers)
    nan_words = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    readings, problems = decode_block(block, [*nan_words, 55], "serial:x/1", 1.0)
    assert [r.metric for r in readings] == ["humidity"]
    assert [p.cause for p in problems] == ["non_finite_value"]


_types = st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"])


@given(
    registers=st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=8),
    type_name=_types,
    word=st.sampled_from(["big", "little"]),
    byte=st.sampled_from(["big", "little"]),
)
def test_decode_block_only_raises_its_own_error(
    registers: list[int], type_name: str, word: str, byte: str
) -> None:
    spec = Register(metric="temperature", address=0, type=type_name, word_order=word, byte_order=byte)
    (block,) = plan_reads([spec])
    try:
        readings, problems = decode_block(block, registers, "serial:x/1", 0.0)
    except SerialDecodeError:
        return
    assert len(readings) + len(problems) == 1
    assert all(math.isfinite(r.value) for r in readings)  # type: ignore[arg-type]


@given(st.binary(max_size=300), st.integers(0, 255), st.sampled_from([3, 4]), st.integers(1, 125))
def test_parse_read_response_arbitrary_bytes(data: bytes, unit: int, function: int, count: int) -> None:
    try:
        registers = parse_read_response(data, unit, function, count)
    except SerialDecodeError:
        return
    assert len(registers) == count


@given(st.binary(max_size=300))
def test_classify_garbled_arbitrary_bytes(data: bytes) -> None:
    assert classify_garbled(data) in ("no_response", "crc_mismatch", "garbage")
