"""MQTT 3.1.1 packets for the network-server subscriber: pure encode/decode, no socket.

What the lorawan driver needs from a broker, and nothing more: CONNECT/CONNACK, SUBSCRIBE/SUBACK,
incoming PUBLISH at QoS 0, 1 and 2 with their acknowledgements, PINGREQ/PINGRESP, DISCONNECT.
Section numbers are those of OASIS "MQTT Version 3.1.1" (mqtt-v3.1.1-os, 29 October 2014).
The stream I/O that uses these functions is `drivers.lorawan.transport.MqttSubscriber`.

Every decoder takes the bytes of one packet (or a buffer) and returns plain values or raises
`MqttProtocolError`; it raises nothing else, whatever the bytes (tested with hypothesis).
"""

from __future__ import annotations

import struct
from typing import Final

from gateway.errors import DriverError

__all__ = [
    "CONNACK",
    "CONNACK_REFUSALS",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "MqttProtocolError",
    "check_flags",
    "connack_refusal",
    "decode",
    "decode_connack",
    "decode_packet_id",
    "decode_publish",
    "decode_remaining_length",
    "decode_suback",
    "encode_connect",
    "encode_disconnect",
    "encode_pingreq",
    "encode_puback",
    "encode_pubcomp",
    "encode_publish",
    "encode_pubrec",
    "encode_remaining_length",
    "encode_subscribe",
    "packet",
    "split_packet",
]

# 2.2.1 Control packet types (the high nibble of the first byte).
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

# 2.2.3 Remaining Length: at most four bytes, so at most 268,435,455.
MAX_REMAINING_LENGTH: Final = 268_435_455

# 3.2.2.3 Connect Return code, values 1-5 (0 is "accepted"; 6-255 are reserved).
CONNACK_REFUSALS: Final[dict[int, str]] = {
    1: "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MqttProtocolError(DriverError):
    """The broker sent bytes that are not a well-formed MQTT 3.1.1 packet, or one we cannot
    accept at this point. A DriverError: the connection is unusable, the runtime restarts."""


# --- fixed header (2.2) ----------------------------------------------------------------------


def encode_remaining_length(length: int) -> bytes:
    """2.2.3: base-128 digits, least significant first, bit 7 = "more digits follow"."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} outside 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def decode_remaining_length(data: bytes | bytearray, offset: int = 0) -> tuple[int, int] | None:
    """2.2.3 from `data[offset:]`: (length, offset just past it), or None while the field is
    incomplete. More than four bytes is malformed."""
    length = 0
    for index in range(4):
        pos = offset + index
        if pos >= len(data):
            return None
        digit = data[pos]
        length |= (digit & 0x7F) << (7 * index)
        if not digit & 0x80:
            return length, pos + 1
    raise MqttProtocolError("malformed remaining length (more than four bytes)")


def packet(first_byte: int, body: bytes = b"") -> bytes:
    """Fixed header (2.2) + body."""
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


def split_packet(buffer: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """The first complete packet in `buffer`: (first byte, body, bytes consumed), or None when
    more bytes are needed."""
    if not buffer:
        return None
    header = decode_remaining_length(buffer, 1)
    if header is None:
        return None
    length, start = header
    if start + length > len(buffer):
        return None
    return buffer[0], bytes(buffer[start : start + length]), start + length


# --- strings (1.5.3) ---------------------------------------------------------------------------


def _string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"string of {len(raw)} bytes is longer than 65535")
    return struct.pack("!H", len(raw)) + raw


# --- client -> broker --------------------------------------------------------------------------


def encode_connect(
    client_id: str, *, keepalive: int, clean_session: bool = True, username: str = "", password: str = ""
) -> bytes:
    """3.1 CONNECT. Variable header (3.1.2): protocol name "MQTT", level 4, connect flags
    (3.1.2.3: bit 7 user name, bit 6 password, bit 1 clean session), keep alive (3.1.2.10).
    Payload (3.1.3): client id, then user name and password when their flags are set. A password
    is sent only with a user name (3.1.2.9)."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive} outside 0..65535")
    flags = 0x02 if clean_session else 0x00
    payload = _string(client_id)
    if username:
        flags |= 0x80
        payload += _string(username)
        if password:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive)
    return packet(CONNECT << 4, header + payload)


def encode_subscribe(packet_id: int, topics: list[str], qos: int) -> bytes:
    """3.8 SUBSCRIBE: fixed-header flags 0010 (3.8.1), packet id, then each topic filter with its
    requested QoS byte (3.8.3)."""
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter (3.8.3)")
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS {qos} is not 0, 1 or 2")
    body = struct.pack("!H", packet_id) + b"".join(_string(topic) + bytes((qos,)) for topic in topics)
    return packet((SUBSCRIBE << 4) | 0x02, body)


def encode_puback(packet_id: int) -> bytes:
    """3.4 PUBACK: the packet id of the QoS 1 PUBLISH it acknowledges."""
    return struct.pack("!BBH", PUBACK << 4, 2, packet_id)


def encode_pubrec(packet_id: int) -> bytes:
    """3.5 PUBREC: first answer to a QoS 2 PUBLISH."""
    return struct.pack("!BBH", PUBREC << 4, 2, packet_id)


def encode_pubcomp(packet_id: int) -> bytes:
    """3.7 PUBCOMP: answer to PUBREL, ends a QoS 2 exchange."""
    return struct.pack("!BBH", PUBCOMP << 4, 2, packet_id)


def encode_pingreq() -> bytes:
    """3.12 PINGREQ."""
    return bytes((PINGREQ << 4, 0))


def encode_disconnect() -> bytes:
    """3.14 DISCONNECT."""
    return bytes((DISCONNECT << 4, 0))


def encode_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0,
                   *, retain: bool = False, dup: bool = False) -> bytes:
    """3.3 PUBLISH (what a broker sends us; used by the tests and for symmetry): fixed-header
    flags DUP (bit 3), QoS (bits 2-1), RETAIN (bit 0) (3.3.1); topic name (3.3.2.1), packet id
    only when QoS > 0 (3.3.2.2), then the payload (3.3.3)."""
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS {qos} is not 0, 1 or 2")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(first, body)


# --- broker -> client --------------------------------------------------------------------------


def decode_connack(body: bytes) -> tuple[bool, int]:
    """3.2 CONNACK body: (session present (3.2.2.2), return code (3.2.2.3))."""
    if len(body) != 2:
        raise MqttProtocolError(f"CONNACK with a {len(body)}-byte body (expected 2)")
    if body[0] & 0xFE:
        raise MqttProtocolError("CONNACK with reserved acknowledge flags set (3.2.2.1)")
    return bool(body[0] & 0x01), body[1]


def connack_refusal(code: int) -> str:
    """Text for a CONNACK return code other than 0 (3.2.2.3, table 3.1)."""
    return CONNACK_REFUSALS.get(code, f"reserved return code {code}")


def decode_publish(first_byte: int, body: bytes) -> tuple[str, bytes, int, int]:
    """3.3 PUBLISH: (topic, payload, QoS, packet id (0 for QoS 0)). The hot path: one slice for
    the topic, one for the payload."""
    qos = (first_byte >> 1) & 0x03
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3 (3.3.1.2)")
    if len(body) < 2:
        raise MqttProtocolError("PUBLISH shorter than its topic length")
    topic_end = 2 + ((body[0] << 8) | body[1])
    start = topic_end + 2 if qos else topic_end
    if start > len(body):
        raise MqttProtocolError("PUBLISH shorter than its topic and packet id")
    try:
        topic = body[2:topic_end].decode()
    except UnicodeDecodeError:
        raise MqttProtocolError("PUBLISH topic is not UTF-8 (1.5.3)") from None
    packet_id = (body[topic_end] << 8) | body[topic_end + 1] if qos else 0
    return topic, body[start:], qos, packet_id


def decode_packet_id(body: bytes) -> int:
    """Body of PUBACK/PUBREC/PUBREL/PUBCOMP (3.4-3.7): a two-byte packet id, nothing else."""
    if len(body) != 2:
        raise MqttProtocolError(f"acknowledgement with a {len(body)}-byte body (expected 2)")
    return (body[0] << 8) | body[1]


def decode_suback(body: bytes) -> tuple[int, list[int]]:
    """3.9 SUBACK: (packet id, one return code per filter: 0-2 granted QoS, 0x80 failure)."""
    if len(body) < 3:
        raise MqttProtocolError(f"SUBACK with a {len(body)}-byte body (expected 3 or more)")
    codes = list(body[2:])
    if any(code not in (0, 1, 2, 0x80) for code in codes):
        raise MqttProtocolError(f"SUBACK with a reserved return code in {codes} (3.9.3)")
    return (body[0] << 8) | body[1], codes


# First-byte flags each broker -> client packet must carry (2.2.2, table 2.2); PUBLISH's vary.
_REQUIRED_FLAGS: Final[dict[int, int]] = {
    CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 0x02, PUBCOMP: 0, SUBACK: 0, PINGRESP: 0,
}


def check_flags(first_byte: int) -> int:
    """The packet type of `first_byte`; raise for a type a broker never sends a client or for
    wrong fixed-header flags (2.2.2: the receiver must close the connection)."""
    kind = first_byte >> 4
    if kind == PUBLISH:
        return kind
    required = _REQUIRED_FLAGS.get(kind)
    if required is None:
        raise MqttProtocolError(f"unexpected packet type {kind} from the broker")
    if first_byte & 0x0F != required:
        raise MqttProtocolError(f"packet type {kind} with fixed-header flags {first_byte & 0x0F:#x}")
    return kind


def _empty(body: bytes) -> None:
    if body:
        raise MqttProtocolError(f"PINGRESP with a {len(body)}-byte body (3.13)")


_DECODERS: Final = {
    CONNACK: decode_connack,
    PUBACK: decode_packet_id,
    PUBREC: decode_packet_id,
    PUBREL: decode_packet_id,
    PUBCOMP: decode_packet_id,
    SUBACK: decode_suback,
    PINGRESP: _empty,
}


def decode(first_byte: int, body: bytes) -> tuple[int, object]:
    """Any packet a broker may send a client: (packet type, that type's decoded value)."""
    kind = check_flags(first_byte)
    if kind == PUBLISH:
        return kind, decode_publish(first_byte, body)
    return kind, _DECODERS[kind](body)
