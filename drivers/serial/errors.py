"""Errors of the serial driver: one decode error type, typed Modbus exception responses."""

from __future__ import annotations

from typing import Final

from gateway.errors import DecodeError, DriverError

__all__ = [
    "MODBUS_EXCEPTION_NAMES",
    "ModbusExceptionResponse",
    "PortUnavailable",
    "SerialDecodeError",
]


class SerialDecodeError(DecodeError):
    """Bytes from a serial device could not be turned into readings (bad checksum, garbage,
    a malformed field). `cause` is a short stable token such as `crc_mismatch`."""


# Modbus Application Protocol Specification V1.1b3, section 7 "MODBUS Exception Responses":
# exception code -> stable token used as the decode-error cause.
MODBUS_EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_failed_to_respond",
}


class ModbusExceptionResponse(SerialDecodeError):
    """The device answered with a Modbus exception (function code + 0x80): it is alive, but
    refuses the request. Carries the wire code so it maps back to the frame."""

    def __init__(self, code: int, *, function: int, device: str | None = None) -> None:
        self.code = code
        self.function = function
        name = MODBUS_EXCEPTION_NAMES.get(code, "unknown_exception")
        super().__init__(
            f"modbus_exception_{name}",
            f"function {function} answered with exception code {code}",
            device=device,
        )

    def to_pdu(self) -> bytes:
        """The exception PDU this error stands for (function | 0x80, code)."""
        return bytes((self.function | 0x80, self.code))


class PortUnavailable(DriverError):
    """The serial port cannot be opened or was lost (USB adapter unplugged)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
