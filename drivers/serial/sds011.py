"""Nova Fitness SDS011 laser dust sensor: frames in and out. Sans-I/O.

Source: "Laser Dust Sensor Control Protocol V1.3", Nova Fitness Co., Ltd., 2015-07-20
(section 1 protocol configuration, section 3 commands) and the SDS011 datasheet V1.3 (data
frame). Serial line 9600 8N1.

Frames, all starting with head 0xAA and ending with tail 0xAB:
- data (sensor -> host, 10 bytes): AA C0 pm25_lo pm25_hi pm10_lo pm10_hi id1 id2 sum AB,
  values in 0.1 ug/m3, sum = low byte of the sum of bytes 2..7.
- reply (sensor -> host, 10 bytes): AA C5 cmd d1 d2 d3 id1 id2 sum AB, same sum rule.
- command (host -> sensor, 19 bytes): AA B4 cmd data(12) id1 id2 sum AB, sum = low byte of the
  sum of bytes 2..16; id FFFF addresses every sensor on the line.
"""

from __future__ import annotations

from typing import Final

import msgspec

from drivers.serial.errors import SerialDecodeError
from gateway.model import Reading

__all__ = [
    "ALL_SENSORS",
    "Command",
    "DataFrame",
    "FrameSplitter",
    "ReplyFrame",
    "build_command",
    "build_data_frame",
    "build_reply_frame",
    "checksum",
    "decode_frame",
    "query_data",
    "readings",
    "set_reporting_mode",
]

HEAD: Final = 0xAA
TAIL: Final = 0xAB
DATA: Final = 0xC0
REPLY: Final = 0xC5
COMMAND: Final = 0xB4
FRAME_LENGTH: Final = 10
COMMAND_LENGTH: Final = 19
ALL_SENSORS: Final = 0xFFFF


class Command:
    """Command ids (protocol V1.3, section 3)."""

    REPORTING_MODE: Final = 2
    QUERY_DATA: Final = 4
    SET_DEVICE_ID: Final = 5
    SLEEP_WORK: Final = 6
    FIRMWARE: Final = 7
    WORKING_PERIOD: Final = 8


class DataFrame(msgspec.Struct, frozen=True):
    device_id: int
    pm2_5: float  # ug/m3
    pm10: float  # ug/m3


class ReplyFrame(msgspec.Struct, frozen=True):
    device_id: int
    command: int
    data: bytes  # the three data bytes after the command id


def checksum(body: bytes | bytearray) -> int:
    return sum(body) & 0xFF


def build_command(command: int, data: bytes = b"", device_id: int = ALL_SENSORS) -> bytes:
    """A 19-byte host command; `data` fills data bytes 2..13 (zero padded)."""
    if len(data) > 12:
        raise ValueError("an SDS011 command carries at most 12 data bytes after its id")
    body = bytes((command,)) + data.ljust(12, b"\x00") + device_id.to_bytes(2, "big")
    return bytes((HEAD, COMMAND)) + body + bytes((checksum(body), TAIL))


def query_data(device_id: int = ALL_SENSORS) -> bytes:
    return build_command(Command.QUERY_DATA, b"", device_id)


def set_reporting_mode(query: bool, device_id: int = ALL_SENSORS) -> bytes:
    """Data byte 2: 1 = set (0 = ask); data byte 3: 1 = query mode, 0 = active mode."""
    return build_command(Command.REPORTING_MODE, bytes((1, 1 if query else 0)), device_id)


def build_data_frame(device_id: int, pm2_5: float, pm10: float) -> bytes:
    """The sensor's data frame (used by the simulator)."""
    body = (
        round(pm2_5 * 10).to_bytes(2, "little")
        + round(pm10 * 10).to_bytes(2, "little")
        + device_id.to_bytes(2, "big")
    )
    return bytes((HEAD, DATA)) + body + bytes((checksum(body), TAIL))


def build_reply_frame(device_id: int, command: int, data: bytes) -> bytes:
    body = bytes((command,)) + data.ljust(3, b"\x00")[:3] + device_id.to_bytes(2, "big")
    return bytes((HEAD, REPLY)) + body + bytes((checksum(body), TAIL))


def decode_frame(frame: bytes) -> DataFrame | ReplyFrame:
    """One complete 10-byte sensor frame, or SerialDecodeError."""
    if len(frame) != FRAME_LENGTH:
        raise SerialDecodeError("short_frame", f"{len(frame)} bytes")
    if frame[0] != HEAD or frame[9] != TAIL:
        raise SerialDecodeError("bad_delimiter", frame.hex())
    if checksum(frame[2:8]) != frame[8]:
        raise SerialDecodeError("checksum_mismatch", frame.hex())
    device_id = int.from_bytes(frame[6:8], "big")
    if frame[1] == DATA:
        pm2_5 = int.from_bytes(frame[2:4], "little") / 10
        pm10 = int.from_bytes(frame[4:6], "little") / 10
        return DataFrame(device_id, pm2_5, pm10)
    if frame[1] == REPLY:
        return ReplyFrame(device_id, frame[2], bytes(frame[3:6]))
    raise SerialDecodeError("unknown_frame", f"command id 0x{frame[1]:02x}")


def readings(frame: DataFrame, device: str, ts: float) -> list[Reading]:
    return [Reading(device, "pm2_5", frame.pm2_5, ts), Reading(device, "pm10", frame.pm10, ts)]


class FrameSplitter:
    """Cuts a byte stream into 10-byte sensor frames, resynchronising after garbage.

    A candidate frame needs head, a known frame id, tail and a matching sum; anything else
    moves the search on by one byte, so a real frame hidden behind noise is still found; a
    frame whose delimiters are in place but whose sum is wrong is dropped whole.
    Each run of skipped bytes is reported once as `garbage`, a well-delimited frame whose sum
    is wrong as `checksum_mismatch`.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[DataFrame | ReplyFrame | SerialDecodeError]:
        buffer = self._buffer
        buffer += data
        out: list[DataFrame | ReplyFrame | SerialDecodeError] = []
        skipped = 0
        pos = 0
        while len(buffer) - pos >= FRAME_LENGTH:
            if buffer[pos] != HEAD or buffer[pos + 1] not in (DATA, REPLY):
                pos += 1
                skipped += 1
                continue
            candidate = bytes(buffer[pos : pos + FRAME_LENGTH])
            if candidate[9] != TAIL:
                pos += 1
                skipped += 1
                continue
            if checksum(candidate[2:8]) != candidate[8]:
                if skipped:
                    out.append(SerialDecodeError("garbage", f"{skipped} bytes skipped"))
                    skipped = 0
                out.append(SerialDecodeError("checksum_mismatch", candidate.hex()))
                pos += FRAME_LENGTH  # delimiters in place: a corrupted frame, drop it whole
                continue
            if skipped:
                out.append(SerialDecodeError("garbage", f"{skipped} bytes skipped"))
                skipped = 0
            out.append(decode_frame(candidate))
            pos += FRAME_LENGTH
        # Keep a possible frame start; bytes that cannot start a frame are dropped now.
        while pos < len(buffer) and buffer[pos] != HEAD:
            pos += 1
            skipped += 1
        if skipped:
            out.append(SerialDecodeError("garbage", f"{skipped} bytes skipped"))
        del buffer[:pos]
        return out
