"""Vaisala WXT5xx weather transmitter, ASCII protocol (polled and automatic). Sans-I/O.

Sources: Vaisala Weather Transmitter WXT530 Series User Guide M211840EN, and WXT520 User's
Guide M210906EN, chapter 7 "Getting the data messages" (aR0 composite, aR1 wind, aR2 PTU,
aR3 precipitation, aR5 supervisor messages, the lowercase `ar` variants carrying a 3-character
CRC) and chapter 8 "Sensor and data message settings" (unit characters of every field).

A message is `<address>R<n>,<field>=<value><unit>,...<cr><lf>`. When a value is invalid the
transmitter puts `#` in place of the unit character: that field yields no reading.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from drivers.serial.errors import SerialDecodeError
from gateway.model import Reading

__all__ = [
    "FIELDS",
    "LineSplitter",
    "WxtMessage",
    "crc",
    "decode_line",
    "poll_command",
    "with_crc",
]

INVALID: Final = "#"

# unit character -> (scale, offset) to the catalog unit, one table per kind of field.
_SPEED: Final = {"M": (1.0, 0.0), "K": (1 / 3.6, 0.0), "S": (0.44704, 0.0), "N": (1852 / 3600, 0.0)}
_DIRECTION: Final = {"D": (1.0, 0.0)}
_TEMPERATURE: Final = {"C": (1.0, 0.0), "F": (5 / 9, -32 * 5 / 9)}
_HUMIDITY: Final = {"P": (1.0, 0.0)}
_PRESSURE: Final = {
    "H": (100.0, 0.0),  # hPa
    "P": (1.0, 0.0),  # Pa
    "B": (1e5, 0.0),  # bar
    "M": (133.322387415, 0.0),  # mmHg
    "I": (3386.389, 0.0),  # inHg
}
_RAIN_AMOUNT: Final = {"M": (1.0, 0.0), "I": (25.4, 0.0)}  # mm, in
_RAIN_RATE: Final = {"M": (1.0, 0.0), "I": (25.4, 0.0)}  # mm/h, in/h
_DURATION: Final = {"s": (1.0, 0.0)}
# Hail: M = hits/cm2 (per hour), I = hits/in2 (per hour); H = plain hits cannot be put per area.
_HAIL: Final = {"M": (1.0, 0.0), "I": (1 / 6.4516, 0.0)}
_VOLTAGE: Final = {"V": (1.0, 0.0)}

# Heating voltage (WXT530 guide 7.2.7, aR5): the unit character tells the heating state, the
# number is volts either way: N = heating off (or no heating option), V = heating on at full
# power, W = heating on at half power, F = heating on in the failsafe mode.
_HEATING_VOLTAGE: Final = {"N": (1.0, 0.0), "V": (1.0, 0.0), "W": (1.0, 0.0), "F": (1.0, 0.0)}

# field code -> (catalog metric, unit table): every measurement of aR1/aR2/aR3/aR5 (and the
# aR0 composite, which repeats them). Id (aR5 information field) is free text, not a
# measurement: known and skipped.
FIELDS: Final[dict[str, tuple[str, dict[str, tuple[float, float]]]]] = {
    "Dn": ("wind_direction_min", _DIRECTION),
    "Dm": ("wind_direction", _DIRECTION),
    "Dx": ("wind_direction_max", _DIRECTION),
    "Sn": ("wind_speed_min", _SPEED),
    "Sm": ("wind_speed", _SPEED),
    "Sx": ("wind_speed_max", _SPEED),
    "Ta": ("temperature", _TEMPERATURE),
    "Tp": ("internal_temperature", _TEMPERATURE),
    "Ua": ("humidity", _HUMIDITY),
    "Pa": ("pressure", _PRESSURE),
    "Rc": ("rain_total", _RAIN_AMOUNT),
    "Rd": ("rain_duration", _DURATION),
    "Ri": ("rain_intensity", _RAIN_RATE),
    "Rp": ("rain_intensity_peak", _RAIN_RATE),
    "Hc": ("hail_total", _HAIL),
    "Hd": ("hail_duration", _DURATION),
    "Hi": ("hail_intensity", _HAIL),
    "Hp": ("hail_intensity_peak", _HAIL),
    "Th": ("heating_temperature", _TEMPERATURE),
    "Vh": ("heating_voltage", _HEATING_VOLTAGE),
    "Vs": ("supply_voltage", _VOLTAGE),
    "Vr": ("reference_voltage", _VOLTAGE),
}
SKIPPED: Final = frozenset({"Id"})
MESSAGE_KINDS: Final = frozenset("01235")


def crc(text: bytes) -> str:
    """The 3-character CRC of `ar` messages (user guide, "CRC-16 computation"): CRC-16 with
    polynomial 0xA001 and preset 0, spread over three printable characters 0x40 | 6 bits."""
    value = 0
    for byte in text:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return "".join(chr(0x40 | part) for part in (value >> 12, (value >> 6) & 0x3F, value & 0x3F))


def with_crc(message: str) -> str:
    return message + crc(message.encode("ascii"))


def poll_command(address: str, kind: str = "0", *, use_crc: bool = False) -> bytes:
    """`aR0<cr><lf>` (or `ar0` + CRC) asks for a composite (or aR1/2/3/5) message."""
    text = f"{address}{'r' if use_crc else 'R'}{kind}"
    if use_crc:
        text = with_crc(text)
    return (text + "\r\n").encode("ascii")


class WxtMessage(msgspec.Struct):
    address: str
    readings: list[Reading]
    invalid: int  # fields sent with the '#' invalid marker
    problems: list[SerialDecodeError]  # fields that could not be read; the others still count


def decode_line(line: bytes, port: str, ts: float) -> WxtMessage:
    """One message line (with or without its CR LF).

    Raises SerialDecodeError when the line as a whole is unusable (not ASCII, not a data
    message, CRC mismatch); a bad field is reported in `problems` and skipped.
    """
    try:
        text = line.decode("ascii").strip("\r\n\x00 ")
    except UnicodeDecodeError:
        raise SerialDecodeError("not_ascii", line[:40].hex()) from None
    if len(text) < 3 or text[1] not in "Rr" or text[2] not in MESSAGE_KINDS:
        raise SerialDecodeError("not_a_data_message", text[:40])
    if text[1] == "r":
        body, sent = text[:-3], text[-3:]
        if crc(body.encode("ascii")) != sent:
            raise SerialDecodeError("crc_mismatch", text[:60])
        text = body
    address = text[0]
    if not (address.isascii() and address.isalnum()):
        raise SerialDecodeError("bad_address", repr(address))
    device = f"serial:{port}/{address}"
    message = WxtMessage(address, [], 0, [])
    for item in text.split(",")[1:]:
        if not item.strip():
            continue  # a trailing comma, or a message with no fields configured
        name, sep, raw = item.strip().partition("=")
        if not sep:
            message.problems.append(SerialDecodeError("malformed_field", item[:20], device=device))
            continue
        row = FIELDS.get(name)
        if row is None:
            continue  # SKIPPED fields, and future ones: not an error
        number, unit = raw[:-1], raw[-1:]
        if unit == INVALID:
            message.invalid += 1
            continue
        metric, units = row
        conversion = units.get(unit)
        if conversion is None:
            message.problems.append(
                SerialDecodeError("unknown_unit", f"{name}={raw}", device=device)
            )
            continue
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            message.problems.append(SerialDecodeError("bad_number", f"{name}={raw}", device=device))
            continue
        scale, offset = conversion
        message.readings.append(Reading(device, metric, value * scale + offset, ts))
    return message


class LineSplitter:
    """Cuts a byte stream into CR LF terminated lines; a runaway line (no terminator within
    `max_length` bytes, e.g. noise at the wrong baud rate) is dropped and reported once."""

    __slots__ = ("_buffer", "_max_length", "_overflowed")

    def __init__(self, max_length: int = 512) -> None:
        self._buffer = bytearray()
        self._max_length = max_length
        self._overflowed = False

    def feed(self, data: bytes) -> list[bytes | SerialDecodeError]:
        buffer = self._buffer
        buffer += data
        out: list[bytes | SerialDecodeError] = []
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if self._overflowed:
                self._overflowed = False  # the tail of a dropped runaway line
                continue
            if line:
                out.append(line)
        if len(buffer) > self._max_length:
            out.append(SerialDecodeError("line_too_long", f"{len(buffer)} bytes without CR LF"))
            buffer.clear()
            self._overflowed = True
        return out
