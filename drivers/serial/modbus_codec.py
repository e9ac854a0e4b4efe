"""Modbus RTU codec: CRC-16, read request/response frames, register decoding. Sans-I/O.

Sources:
- MODBUS over Serial Line Specification and Implementation Guide V1.02 (modbus.org, 2006),
  section 2.5.1.2 (RTU frame: address, PDU, CRC low byte first) and 6.2.2 (CRC generation:
  polynomial 0xA001 reflected, preset 0xFFFF).
- MODBUS Application Protocol Specification V1.1b3, sections 6.3 (0x03 Read Holding Registers),
  6.4 (0x04 Read Input Registers) and 7 (exception responses).

Register decoding: registers are 16-bit big-endian on the wire (application protocol 4.2); how
multi-register values are laid out is the vendor's choice, hence `word_order` (which register
holds the most significant word) and `byte_order` (bytes inside each register).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final, Protocol

import msgspec

from drivers.serial.errors import ModbusExceptionResponse, SerialDecodeError
from gateway.model import Reading

__all__ = [
    "MAX_REGISTERS_PER_READ",
    "REGISTER_TYPES",
    "ReadBlock",
    "RegisterField",
    "build_read_request",
    "build_read_response",
    "classify_garbled",
    "crc16",
    "decode_block",
    "decode_registers",
    "parse_read_response",
    "plan_reads",
    "with_crc",
]

# Application protocol 6.3/6.4: quantity of registers 1 to 125 (0x7D).
MAX_REGISTERS_PER_READ: Final = 125


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of `data` (serial line spec 6.2.2). On the wire: low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "little")


def build_read_request(unit: int, function: int, address: int, count: int) -> bytes:
    """RTU frame of a 0x03/0x04 read: unit, function, start address, quantity, CRC."""
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


def build_read_response(unit: int, function: int, registers: Sequence[int]) -> bytes:
    """RTU frame of a read answer (used by the benchmark's bare peer and by tests)."""
    body = struct.pack(f">BBB{len(registers)}H", unit, function, 2 * len(registers), *registers)
    return with_crc(body)


def parse_read_response(frame: bytes, unit: int, function: int, count: int) -> list[int]:
    """Registers of a complete read response frame, or SerialDecodeError /
    ModbusExceptionResponse (application protocol section 7)."""
    if len(frame) < 5:
        raise SerialDecodeError("short_frame", f"{len(frame)} bytes")
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise SerialDecodeError("crc_mismatch", frame.hex())
    if frame[0] != unit:
        raise SerialDecodeError("wrong_unit", f"asked unit {unit}, answer from {frame[0]}")
    if frame[1] == function | 0x80:
        raise ModbusExceptionResponse(frame[2], function=function)
    if frame[1] != function:
        raise SerialDecodeError("wrong_function", f"asked {function}, answer {frame[1]}")
    if frame[2] != 2 * count or len(frame) != 5 + 2 * count:
        raise SerialDecodeError("bad_length", f"byte count {frame[2]} for {count} registers")
    return list(struct.unpack_from(f">{count}H", frame, 3))


def classify_garbled(received: bytes) -> str:
    """Why bytes received during a failed request were no answer: a decode-error cause."""
    if not received:
        return "no_response"
    # A frame whose tail is a valid CRC over what precedes it from some offset is a frame
    # behind garbage; otherwise look for a CRC failure of a plausible read answer.
    for start in range(len(received) - 4):
        chunk = received[start:]
        if len(chunk) >= 5 and chunk[1] in (3, 4) and len(chunk) >= 5 + chunk[2]:
            frame = chunk[: 5 + chunk[2]]
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                return "crc_mismatch"
    return "garbage"


class _FieldSpec(Protocol):
    """What planning needs of a configured register (settings.Register has it)."""

    @property
    def metric(self) -> str: ...
    @property
    def function(self) -> int: ...
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def word_order(self) -> str: ...
    @property
    def byte_order(self) -> str: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...


# type -> (registers, struct format of the assembled big-endian bytes)
REGISTER_TYPES: Final[dict[str, tuple[int, str]]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
}


class RegisterField(msgspec.Struct, frozen=True):
    """One value inside a read block: where it sits and how it becomes a catalog value."""

    metric: str
    offset_in_block: int
    registers: int
    fmt: str
    swap_words: bool
    swap_bytes: bool
    scale: float
    value_offset: float


class ReadBlock(msgspec.Struct, frozen=True):
    """One read request (function, start address, quantity) and the fields it carries."""

    function: int
    address: int
    count: int
    fields: tuple[RegisterField, ...]


def decode_registers(
    registers: Sequence[int], fmt: str, *, swap_words: bool = False, swap_bytes: bool = False
) -> float:
    """Assemble 16-bit registers into one number. `swap_words`: least significant register
    first ("little" word order); `swap_bytes`: low byte first inside each register."""
    words = reversed(registers) if swap_words else registers
    raw = bytearray()
    for word in words:
        raw += (word & 0xFFFF).to_bytes(2, "little" if swap_bytes else "big")
    return float(struct.unpack(fmt, raw)[0])


def plan_reads(fields: Sequence[_FieldSpec], *, max_gap: int = 8) -> list[ReadBlock]:
    """Group register fields into as few reads as the protocol allows: same function code,
    contiguous or separated by at most `max_gap` unused registers, at most 125 per read."""
    ordered = sorted(fields, key=lambda f: (f.function, f.address))
    blocks: list[ReadBlock] = []
    current: list[_FieldSpec] = []

    def flush() -> None:
        if not current:
            return
        start = current[0].address
        end = max(f.address + REGISTER_TYPES[f.type][0] for f in current)
        blocks.append(
            ReadBlock(
                function=current[0].function,
                address=start,
                count=end - start,
                fields=tuple(
                    RegisterField(
                        metric=f.metric,
                        offset_in_block=f.address - start,
                        registers=REGISTER_TYPES[f.type][0],
                        fmt=REGISTER_TYPES[f.type][1],
                        swap_words=f.word_order == "little",
                        swap_bytes=f.byte_order == "little",
                        scale=f.scale,
                        value_offset=f.offset,
                    )
                    for f in current
                ),
            )
        )
        current.clear()

    for spec in ordered:
        if current:
            start = current[0].address
            end = max(f.address + REGISTER_TYPES[f.type][0] for f in current)
            new_end = max(end, spec.address + REGISTER_TYPES[spec.type][0])
            if (
                spec.function != current[0].function
                or spec.address - end > max_gap
                or new_end - start > MAX_REGISTERS_PER_READ
            ):
                flush()
        current.append(spec)
    flush()
    return blocks


def decode_block(
    block: ReadBlock, registers: Sequence[int], device: str, ts: float
) -> tuple[list[Reading], list[SerialDecodeError]]:
    """Readings of one answered read, and the fields that held no usable value (a NaN or
    infinite float is field garbage, not a value); the other fields still count."""
    if len(registers) < block.count:
        raise SerialDecodeError(
            "bad_length", f"{len(registers)} registers for {block.count}", device=device
        )
    readings: list[Reading] = []
    problems: list[SerialDecodeError] = []
    for field in block.fields:
        words = registers[field.offset_in_block : field.offset_in_block + field.registers]
        raw = decode_registers(
            words, field.fmt, swap_words=field.swap_words, swap_bytes=field.swap_bytes
        )
        if not math.isfinite(raw):
            problems.append(SerialDecodeError("non_finite_value", field.metric, device=device))
            continue
        readings.append(Reading(device, field.metric, raw * field.scale + field.value_offset, ts))
    return readings, problems
